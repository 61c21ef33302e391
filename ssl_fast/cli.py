"""Command line: `python -m ssl_fast info | bench OP... | train TASK [options] | eval RUN_DIR`."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

from .bench import OPS as BENCH_OPS

if TYPE_CHECKING:
    from .train import TrainConfig
    from .train.tasks import Table, Task, TaskOptions


def _info(args: argparse.Namespace) -> int:
    from .info import backend_info

    info = backend_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    ext = info["extension"]
    print(f"ssl_fast         {info['version']}")
    print(f"torch            {info['torch']} (CUDA {info['torch_cuda'] or 'none'}, "
          f"GPU {'available' if info['cuda_available'] else 'not available'})")
    if ext["loaded"]:
        archs = ext["cuda_archs"] or "-"
        print(f"ssl_fast._C      built against torch {ext['torch']}, CUDA kernels "
              f"{'on (' + archs + ')' if ext['cuda'] else 'off'}, debug {'on' if ext['debug'] else 'off'}, "
              f"gcc {ext['compiler']}")
    else:
        print(f"ssl_fast._C      not loaded: {ext['error']}")
    print(f"backend          {info['backend']} (SSL_FAST_BACKEND)")
    if info["cpu_isa"]:
        print(f"cpu vector code  {info['cpu_isa']} (SSL_FAST_CPU_ISA)")
    print(f"{'op':<24} {'cpu':<6} cuda")
    for op, kernels in info["ops"].items():
        print(f"{op:<24} {'yes' if kernels['cpu'] else 'no':<6} {'yes' if kernels['cuda'] else 'no'}")
    return 0


def _bench_ops(names: list[str]) -> list[str]:
    ops = list(BENCH_OPS) if "all" in names else list(dict.fromkeys(names))
    unknown = [name for name in ops if name not in BENCH_OPS]
    if unknown:
        raise ValueError(f"unknown op {unknown[0]!r} for bench; choose from {', '.join(BENCH_OPS)} or all")
    return ops


def _check_cuda(requested: str | None) -> None:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device cuda, but no CUDA GPU is available (torch {torch.__version__}, "
            f"CUDA {torch.version.cuda or 'none'})"
        )


def _bench_device(requested: str | None) -> str:
    import torch

    _check_cuda(requested)
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def _check_bench_options(args: argparse.Namespace, ops: list[str], harness: ModuleType) -> None:
    for option, parse in (("sizes", harness.parse_shapes), ("dtypes", harness.parse_dtypes)):
        if getattr(args, option) is not None:
            try:
                parse(getattr(args, option))
            except ValueError as exc:
                raise ValueError(f"--{option}: {exc}") from None
    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {args.rounds}")
    if args.sizes is not None:
        _check_ranks(ops, harness.parse_shapes(args.sizes), harness.format_shape)


def _check_ranks(ops: list[str], shapes: tuple, format_shape) -> None:
    """--sizes applies to every op named: an op whose default shapes all have one number of
    dimensions (masking, NT-Xent) takes only shapes of that number."""
    for op in ops:
        family, selects = BENCH_OPS[op]
        benches = [b for b in importlib.import_module(f"{__package__}.bench.{family}").BENCHES
                   if selects in b.name]
        examples = [shape for b in benches for cases in b.default_cases.values() for shape, _ in cases]
        ranks = {len(shape) for shape in examples}
        bad = [shape for shape in shapes if len(ranks) == 1 and len(shape) not in ranks]
        if bad:
            raise ValueError(
                f"--sizes: {op} takes shapes of {ranks.pop()} dimensions, such as "
                f"{format_shape(examples[0])}; got {format_shape(bad[0])}"
            )


def _pytest_command(args: argparse.Namespace, ops: list[str], device: str, table: Path) -> list[str]:
    """pytest on the family modules of `ops`, inside the package (installed or not), with the
    harness's plugin. Plain asserts: rewriting them would write bytecode into the package."""
    families = dict.fromkeys(BENCH_OPS[op][0] for op in ops)
    files = [importlib.util.find_spec(f"{__package__}.bench.{family}").origin for family in families]
    command = [
        sys.executable, "-m", "pytest", *files, "-p", f"{__package__}.bench.plugin", "--benchmark-only",
        "-q", "-rs", "-p", "no:cacheprovider", "--assert=plain",
        "--benchmark-quiet",  # its wide table; the short one is printed at the end
        "-k", " or ".join(BENCH_OPS[op][1] for op in ops),
        "--bench-device", device, "--bench-table", str(table),
        "--benchmark-storage", f"file://{table.parent / '.benchmarks'}",  # created empty: not in the cwd
    ]
    for option, value in (("--bench-sizes", args.sizes), ("--bench-dtypes", args.dtypes),
                          ("--bench-rounds", args.rounds), ("--bench-csv", args.csv),
                          ("--benchmark-json", args.json), ("--bench-plot", args.plot)):
        if value is not None:
            command += [option, str(value.resolve()) if isinstance(value, Path) else str(value)]
    if args.no_memory:
        command.append("--bench-no-memory")
    return command


def _import_env() -> dict[str, str]:
    """The environment of the benchmark process, in which it imports this very ssl_fast: from
    site-packages as this process did, or from a checkout through PYTHONPATH."""
    root = Path(__file__).resolve().parents[1]
    if root in {Path(folder).resolve() for folder in site.getsitepackages()}:
        return dict(os.environ)
    path = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
    return {**os.environ, "PYTHONPATH": path}


def _bench(args: argparse.Namespace) -> int:
    ops = _bench_ops(args.ops)
    if importlib.util.find_spec("pytest_benchmark") is None:
        raise ImportError("bench needs pytest-benchmark, which is not installed "
                          "(pip install 'ssl_fast[bench]')")
    if args.plot is not None:
        from ._plotting import require

        require("--plot")
    from .bench import harness

    device = _bench_device(args.device)
    _check_bench_options(args, ops, harness)
    table = (args.table or harness.DEFAULT_TABLE).resolve()
    table.unlink(missing_ok=True)  # so that a failed run cannot show an old table
    status = subprocess.run(_pytest_command(args, ops, device, table), env=_import_env()).returncode
    if status != 0:
        print(f"ssl_fast: error: the benchmarks failed (pytest exit status {status})", file=sys.stderr)
        return 1
    if not table.is_file():  # pytest passed, with every case skipped
        print("ssl_fast: no case was measured: every case was skipped (reasons above)")
        return 0
    print(table.read_text(), end="")
    plot = f"; plot in {args.plot.resolve()}" if args.plot is not None else ""
    print(f"\nrows appended to {(args.csv or harness.DEFAULT_CSV).resolve()}; table in {table}{plot}")
    return 0


def _launch(requested: str) -> tuple[int, int, str]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) joins the process group:
    NCCL with one GPU per local rank, or gloo on the CPU."""
    import torch
    import torch.distributed as dist

    if requested not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {requested!r}")
    _check_cuda(requested)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, requested
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if requested == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if requested == "cuda" else "gloo")
    return dist.get_rank(), world, f"cuda:{local}" if requested == "cuda" else "cpu"


def _resume_from(args: argparse.Namespace, run_dir: Path) -> Path | None:
    if args.resume is None:
        return None
    path = run_dir / "checkpoint.pt" if args.resume is True else Path(args.resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {path}")
    return path


def _check_resumed_options(
    args: argparse.Namespace, stored: dict, options: TaskOptions, resume: Path
) -> None:
    """A resumed run keeps the options it was trained with: one given again must say the same."""
    defaults = build_parser().parse_args(["train", args.task])
    kept = {
        "data": options.data, "column": options.column, "tokenizer": options.tokenizer,
        "holdout": options.holdout, "variant": options.variant, "sparsity": options.sparsity, "k": options.k,
        "noise": options.noise, "beta": options.beta,
        "seed": stored["seed"], "batch_size": stored["batch_size"], "lr": stored["lr"], "amp": stored["amp"],
        "chunk_size": stored["chunk_size"] or None, "compile": stored["compile"],
        "metrics": stored["metrics"], "no_tensorboard": not stored["tensorboard"],
    }
    for name, value in kept.items():
        given = getattr(args, name)
        if given != getattr(defaults, name) and given != value:
            flag = "--" + name.replace("_", "-")
            if value is None or value is False:
                was = f"without {flag}"
            else:
                was = flag if value is True else f"{flag} {value}"
            raise ValueError(
                f"--resume: {resume} was trained with {was}, and a resumed run keeps its options; drop "
                f"{flag}, or start a new run with another --out"
            )


def _variant_options(args: argparse.Namespace, variant: str) -> dict:
    """The autoencoder variant's options (TaskOptions fields), each given or its default; an
    option that the task or the variant does not use is a usage error."""
    from .train.tasks import AUTOENCODER_VARIANTS, VARIANT_OPTIONS

    given = {name: getattr(args, name) for name in VARIANT_OPTIONS if getattr(args, name) is not None}
    if args.task != "autoencoder":
        if args.variant is not None or given:
            flag = "variant" if args.variant is not None else next(iter(given))
            raise ValueError(f"--{flag} applies to the autoencoder task only, not {args.task}")
        return {}
    defaults = AUTOENCODER_VARIANTS[variant]
    for name in given:
        if name not in defaults:
            users = [v for v, options in AUTOENCODER_VARIANTS.items() if name in options]
            raise ValueError(f"--{name} applies to --variant {' or '.join(users)}, not {variant}")
    return {"variant": variant, **defaults, **given}


def _run_dir(out: Path, task: str, variant: str | None) -> Path:
    """OUT/TASK, and OUT/autoencoder-VARIANT for the autoencoder's variants other than plain."""
    return out / (task if variant in (None, "plain") else f"{task}-{variant}")


def _run_checkpoint(path: Path) -> tuple[dict, str, TaskOptions]:
    """The checkpoint of a `train` run, read once, with the task it trained and the options
    that task was built from."""
    from .train.tasks import TASKS, TaskOptions
    from .train.trainer import dataclass_from_dict, load_checkpoint

    state = load_checkpoint(path)
    extra = state["config"]["extra"]
    if extra.get("task") not in TASKS:
        raise ValueError(f"{path} was not written by `ssl_fast train`")
    what = f"the task config of checkpoint {path}"
    options = dataclass_from_dict(TaskOptions, extra.get("options", {}), what)
    return state, extra["task"], options


def _train(args: argparse.Namespace) -> int:
    from .train import Trainer
    from .train.tasks import TaskOptions, build_task

    rank, world, device = _launch(args.device)
    resume = _resume_from(args, _run_dir(args.out, args.task, args.variant))
    if resume is None:
        state = None
        variant = _variant_options(args, args.variant or "plain")
        options = TaskOptions(args.seed, args.data, args.column, args.tokenizer, args.holdout, **variant)
    else:  # the stored run continues
        state, stored_task, options = _run_checkpoint(resume)
        if stored_task != args.task:
            raise ValueError(f"--resume: {resume} is a {stored_task} run, not {args.task}")
        _variant_options(args, options.variant)
        _check_resumed_options(args, state["config"], options, resume)
    run_dir = _run_dir(args.out, args.task, options.variant)
    task = build_task(args.task, options, run_dir, fresh=resume is None, distributed=world > 1,
                      progress=not args.quiet)
    if state is None:
        config = _new_config(args, task, options, run_dir, world)
    else:
        config = _resumed_config(args, state, resume, len(task.dataset), run_dir, world)
    trainer = Trainer(task.model, task.dataset, config, device, collate_fn=task.collate_fn)
    if state is not None:
        trainer.load(state)
        if trainer.step >= config.steps and rank == 0:
            print(f"ssl_fast: {resume} has finished its {trainer.step} steps; nothing to train, evaluating "
                  f"it (--steps above {trainer.step} would continue it)", file=sys.stderr)
    logged = trainer.fit(progress=not args.quiet)
    if rank == 0:
        summary = {"task": args.task, "steps": trainer.step, "world_size": world,
                   "train_seconds": round(trainer.train_seconds, 2),
                   "final_loss": logged[-1]["loss"] if logged else None}
        table = task.evaluate(trainer.model, run_dir)
        _report(summary, table, run_dir, args.json)
        _save_curves(config, table, task.metric)
    if world > 1:
        from .distributed import destroy_process_group

        del trainer  # its DDP wrapper holds the process group
        destroy_process_group()
    return 0


def _save_curves(config: TrainConfig, table: Table, metric: str | None) -> None:
    """curves.png beside the metrics; without matplotlib, a note instead (the run is complete)."""
    from .train.curves import save_curves

    try:
        save_curves(config.metrics_path, Path(config.out_dir) / "curves.png", table, metric)
    except ImportError as exc:
        print(f"ssl_fast: {exc}; the run is complete without it", file=sys.stderr)


def _new_config(
    args: argparse.Namespace, task: Task, options: TaskOptions, run_dir: Path, world: int
) -> TrainConfig:
    """The TrainConfig of a new run: the options given, else the task's defaults."""
    from .train import TrainConfig
    from .train.trainer import steps_per_epoch

    batch_size = args.batch_size or task.batch_size
    samples = len(task.dataset)
    try:
        per_epoch = steps_per_epoch(samples, batch_size, world)
    except ValueError as exc:
        fix = f"pass --batch-size {samples // world} or less" if samples >= world else "use fewer processes"
        raise ValueError(f"{exc}: {fix}") from None
    steps = args.steps or (args.epochs * per_epoch if args.epochs else 500)
    return TrainConfig(
        steps=steps, batch_size=batch_size, lr=args.lr or task.lr, warmup_steps=min(100, steps // 10),
        amp=args.amp, seed=args.seed, out_dir=str(run_dir), chunk_size=args.chunk_size or 0,
        log_every=max(1, steps // 20), metrics=args.metrics, tensorboard=not args.no_tensorboard,
        compile=args.compile, extra={"task": args.task, "options": vars(options)},
        **(args.checkpoint_every or {}),
    )


def _resumed_config(
    args: argparse.Namespace, state: dict, resume: Path, samples: int, run_dir: Path, world: int
) -> TrainConfig:
    """The stored TrainConfig, continued: --steps or --epochs may extend the run, and
    --checkpoint-every change the interval; a length the run has already reached is refused."""
    from .train import TrainConfig
    from .train.trainer import steps_per_epoch

    stored, done = state["config"], state["step"]
    steps = args.steps or (args.epochs * steps_per_epoch(samples, stored["batch_size"], world)
                           if args.epochs else None)
    if steps is not None and steps <= done:
        asked = f"--steps {steps}" if args.steps else f"--epochs {args.epochs} ({steps} steps)"
        raise ValueError(
            f"--resume: {resume} is at step {done} already, so {asked} leaves nothing to train; ask for "
            f"more, or evaluate it with `python -m ssl_fast eval {resume.parent}`"
        )
    return TrainConfig(**{**stored, "out_dir": str(run_dir), "steps": steps or stored["steps"],
                          **(args.checkpoint_every or {})})


def _report(summary: dict, table: dict, run_dir: Path, as_json: bool) -> None:
    """Prints the evaluation table (or one JSON line) and saves it as run_dir/eval.json."""
    from .train.evaluate import format_table

    result = {**summary, "evaluation": table}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        print(json.dumps(result))
        return
    loss = f", final loss {summary['final_loss']:.4f}" if summary.get("final_loss") is not None else ""
    took = f" in {summary['train_seconds']:.0f} s" if "train_seconds" in summary else ""
    print(f"{summary['task']}: {summary['steps']} steps{took}{loss}; held-out evaluation ({run_dir}):")
    print(format_table(table) if table else "(no labelled held-out data to evaluate on)")


def _eval(args: argparse.Namespace) -> int:
    from .train import TrainConfig
    from .train.tasks import build_task

    path = args.run_dir / "checkpoint.pt" if args.run_dir.is_dir() else args.run_dir
    if not path.is_file():
        raise FileNotFoundError(f"eval: no checkpoint.pt in {args.run_dir}")
    _, _, device = _launch(args.device)
    state, name, options = _run_checkpoint(path)
    task = build_task(name, options, path.parent, fresh=False, progress=False)
    task.model.load_state_dict(state["model"])
    summary = {"task": name, "steps": state["step"]}
    if "train_seconds" in state:
        summary["train_seconds"] = round(state["train_seconds"], 2)
    table = task.evaluate(task.model.to(device), path.parent)
    _report(summary, table, path.parent, args.json)
    config = TrainConfig(**{**state["config"], "out_dir": str(path.parent)})
    _save_curves(config, table, task.metric)  # with the metric just measured
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, as the handlers' errors (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ssl_fast: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ssl_fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="versions, build flags and the kernels present for each op")
    info.add_argument("--json", action="store_true", help="print the record as JSON")
    info.set_defaults(func=_info)

    bench = sub.add_parser(
        "bench", help="benchmark ops against torch (pytest-benchmark) and print a markdown table",
        description="Runs the op's cases (ssl_fast.bench) with pytest-benchmark in a subprocess, appends "
        "the rows to a CSV and prints the table; outputs go to bench-out/ in the working directory. "
        "Environment variables (THP_MEM_ALLOC_ENABLE, SSL_FAST_HUGEPAGES, ...) pass through to the "
        "benchmark processes. Needs pytest-benchmark (pip install 'ssl_fast[bench]').",
    )
    bench.add_argument("ops", nargs="+", metavar="op", help=f"{', '.join(BENCH_OPS)} or all")
    bench.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    bench.add_argument("--sizes", help="shapes instead of the defaults, e.g. 4096x4096,41x401x127,16M")
    bench.add_argument("--dtypes", help="dtypes instead of the defaults, e.g. float32,bf16")
    bench.add_argument("--rounds", type=int, help="timed rounds per case (default: 10 on cpu, 100 on cuda)")
    bench.add_argument("--csv", type=Path, help="CSV to append rows to (default: bench-out/results.csv)")
    bench.add_argument("--table", type=Path, help="markdown table file (default: bench-out/table.md)")
    bench.add_argument("--json", type=Path, help="also save pytest-benchmark's JSON report here")
    bench.add_argument("--plot", type=Path, metavar="PNG", help="also plot time and peak memory against "
                       "size, log-log, a pair of panels per op family (needs matplotlib)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    bench.set_defaults(func=_bench)

    train = sub.add_parser(
        "train", help="pre-train a model (bundled data by default), then evaluate it beside baselines",
        description="Tasks: autoencoder (images, reconstruction), simclr (images, NT-Xent), mlm (text, "
        "masked tokens), forecast (a series, the next 6 values). The autoencoder comes in variants "
        "(--variant): plain (MSE), sparse (one overcomplete ReLU layer, L1 penalty weighted by --sparsity), "
        "topk (the same layer, only the "
        "--k largest latent units of each image kept), denoising (Gaussian noise of std --noise on the "
        "inputs, clean targets) and vae (Bernoulli decoder, reconstruction + --beta * KL). Defaults run "
        "offline on bundled data: "
        "scikit-learn's digits, the text of Python's documentation, the yearly sunspot numbers. "
        "OUT/TASK/ (OUT/autoencoder-VARIANT/ for variants other than plain) receives checkpoint.pt (every "
        "2min and at the end), metrics, eval.json, curves.png "
        "(with matplotlib), TensorBoard events, and reconstructions.png (autoencoder; vae: with samples) or "
        "tokenizer.json "
        "(mlm). Under torchrun each process trains on its shard (gloo on cpu, NCCL on cuda) and SimCLR "
        "contrasts across all of them.",
    )
    train.add_argument("task", choices=("autoencoder", "simclr", "mlm", "forecast"))
    train.add_argument("--data", help="images: digits (default), mnist (torchvision), a folder of MNIST's "
                       "IDX files (e.g. Fashion-MNIST; t10k is the held-out split) or a .npy/.npz file; mlm: "
                       "text "
                       "files or folders (default: Python's documentation); forecast: a CSV file (default: "
                       "sunspots)")
    train.add_argument("--column", help="forecast: the CSV column (default: the last)")
    train.add_argument("--variant", choices=("plain", "sparse", "topk", "denoising", "vae"),
                       help="autoencoder: the kind of autoencoder (default plain)")
    train.add_argument("--sparsity", type=_positive_float, help="autoencoder sparse: the L1 penalty's weight "
                       "(default 1e-4)")
    train.add_argument("--k", type=_positive,
                       help="autoencoder topk: latent units kept per image (default 64)")
    train.add_argument("--noise", type=_positive_float, help="autoencoder denoising: standard deviation of "
                       "the Gaussian noise added to the inputs (default 0.3)")
    train.add_argument("--beta", type=_positive_float,
                       help="autoencoder vae: the KL term's weight (default 1)")
    train.add_argument("--tokenizer", help="mlm: a Hugging Face tokenizer name or folder (default: a "
                       "WordPiece vocabulary trained on the corpus)")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive, help="optimizer steps (default 500)")
    length.add_argument("--epochs", type=_positive, help="passes over the training set, instead of --steps")
    train.add_argument("--batch-size", type=_positive,
                       help="samples per step and process (default: the task's, 256 for simclr, else 128)")
    train.add_argument("--lr", type=_positive_float, help="peak learning rate (default: the task's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--holdout", choices=("test", "validation"), default="test",
                       help="what the evaluation reads: the test part (default), or (autoencoder, simclr, "
                       "forecast) a validation part carved out of the training part, which then trains "
                       "without it: for choosing hyper-parameters without reading the test part")
    train.add_argument("--amp", choices=("bf16", "fp16"), help="autocast dtype (fp16 on CUDA only)")
    train.add_argument("--chunk-size", type=_positive,
                       help="simclr: gradient caching, encoding the batch in chunks of this many images")
    train.add_argument("--compile", action="store_true", help="torch.compile the loss computation")
    train.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    train.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    train.add_argument("--resume", nargs="?", const=True, metavar="CHECKPOINT",
                       help="continue OUT/TASK/checkpoint.pt (or CHECKPOINT) where it stopped, with its "
                       "stored options; --steps or --epochs may extend it")
    train.add_argument("--checkpoint-every", type=_checkpoint_interval, metavar="INTERVAL",
                       help="write checkpoint.pt every N steps, or after a time such as 90s, 10min or 1h; "
                       "0: only at the end (default: every 2min)")
    train.add_argument("--metrics", choices=("jsonl", "csv"), default="jsonl", help="metrics file format")
    train.add_argument("--no-tensorboard", action="store_true",
                       help="no TensorBoard events (written when tensorboard is installed)")
    train.add_argument("--json", action="store_true", help="print the evaluation as one JSON line")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("eval", help="evaluate a trained run again (RUN_DIR: OUT/TASK of `train`)")
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    evaluate.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    evaluate.add_argument("--json", action="store_true", help="print the evaluation as one JSON line")
    evaluate.set_defaults(func=_eval)
    return parser


def _positive_of(kind: type, name: str):
    """An argparse type: a finite `kind` above zero, else a one-line usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive {name}, got {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive {name}, got {text}")
        return value

    return parse


_positive = _positive_of(int, "integer")
_positive_float = _positive_of(float, "number")

_SECONDS_PER = {"s": 1, "min": 60, "h": 3600}


def _checkpoint_interval(text: str) -> dict:
    """An argparse type: `N` steps or a time `Ns`, `Nmin`, `Nh` between checkpoints, as the
    TrainConfig fields it sets; 0 (in any unit): only at the end."""
    match = re.fullmatch(r"(\d+)|(\d+(?:\.\d*)?)(s|min|h)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"must be a number of steps or a time such as 90s, 10min or 1h, got {text!r}"
        )
    if match[1] is not None:
        return {"checkpoint_every": int(match[1]), "checkpoint_seconds": 0.0}
    return {"checkpoint_every": 0, "checkpoint_seconds": float(match[2]) * _SECONDS_PER[match[3]]}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:  # a user error: one line, exit status 2
        print(f"ssl_fast: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # the trainer's NaN stop
        print(f"ssl_fast: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
