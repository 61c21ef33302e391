"""Command line: `python -m ssl_fast info | bench OP... | train TASK [options]`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

# `bench` op name -> (benchmark file in benchmarks/, pytest -k expression selecting its cases).
BENCH_OPS = {
    "smooth_l1": ("bench_regression_loss.py", "smooth_l1"),
    "mse": ("bench_regression_loss.py", "mse"),
    "nt_xent": ("bench_contrastive.py", "nt_xent"),
    "mask_tokens": ("bench_masking.py", "mask_tokens"),  # both variants (with and without a special mask)
    "random_masking": ("bench_masking.py", "random_masking"),
    "simclr_batch": ("bench_batch.py", "simclr_batch"),  # largest batch in a memory budget, chunked or not
}


def _info(args: argparse.Namespace) -> int:
    from .info import backend_info

    info = backend_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    ext = info["extension"]
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
    print(f"{'op':<24} {'cpu':<6} cuda")
    for op, kernels in info["ops"].items():
        print(f"{op:<24} {'yes' if kernels['cpu'] else 'no':<6} {'yes' if kernels['cuda'] else 'no'}")
    return 0


def benchmarks_dir() -> Path:
    """benchmarks/ of the source tree this ssl_fast was imported from."""
    import ssl_fast

    folder = Path(ssl_fast.__file__).resolve().parents[1] / "benchmarks"
    if not (folder / "harness.py").is_file():
        raise ValueError(
            f"benchmarks/ not found at {folder}: this ssl_fast is installed without its source tree; "
            "run from a checkout of the repository"
        )
    return folder


def _bench_ops(names: list[str]) -> list[str]:
    ops = list(BENCH_OPS) if "all" in names else list(dict.fromkeys(names))
    unknown = [name for name in ops if name not in BENCH_OPS]
    if unknown:
        raise ValueError(f"unknown op {unknown[0]!r} for bench; choose from {', '.join(BENCH_OPS)} or all")
    return ops


def _bench_device(requested: str | None) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device cuda, but no CUDA GPU is available (torch {torch.__version__}, "
            f"CUDA {torch.version.cuda or 'none'})"
        )
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def _check_bench_options(args: argparse.Namespace, harness: ModuleType) -> None:
    for option, parse in (("sizes", harness.parse_shapes), ("dtypes", harness.parse_dtypes)):
        if getattr(args, option) is not None:
            try:
                parse(getattr(args, option))
            except ValueError as exc:
                raise ValueError(f"--{option}: {exc}") from None
    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {args.rounds}")


def _pytest_command(
    args: argparse.Namespace, ops: list[str], folder: Path, device: str, table: Path
) -> list[str]:
    files = list(dict.fromkeys(str(folder / BENCH_OPS[op][0]) for op in ops))
    command = [
        sys.executable, "-m", "pytest", *files, "--benchmark-only", "-q", "-p", "no:cacheprovider",
        "--benchmark-quiet",  # its wide table; the short one is printed at the end
        "-k", " or ".join(BENCH_OPS[op][1] for op in ops),
        "--bench-device", device, "--bench-table", str(table),
    ]
    for option, value in (("--bench-sizes", args.sizes), ("--bench-dtypes", args.dtypes),
                          ("--bench-rounds", args.rounds), ("--bench-csv", args.csv),
                          ("--benchmark-json", args.json)):
        if value is not None:
            command += [option, str(value.resolve()) if isinstance(value, Path) else str(value)]
    if args.no_memory:
        command.append("--bench-no-memory")
    return command


def _bench(args: argparse.Namespace) -> int:
    ops = _bench_ops(args.ops)
    folder = benchmarks_dir()
    if str(folder.parent) not in sys.path:  # import the harness as the package `benchmarks`
        sys.path.insert(0, str(folder.parent))
    from benchmarks import harness

    device = _bench_device(args.device)
    _check_bench_options(args, harness)
    table = (args.table or harness.DEFAULT_TABLE).resolve()
    table.unlink(missing_ok=True)  # so that a failed run cannot show an old table
    status = subprocess.run(_pytest_command(args, ops, folder, device, table), cwd=folder.parent).returncode
    if status != 0:
        print(f"ssl_fast: error: the benchmarks failed (pytest exit status {status})", file=sys.stderr)
        return 1
    print(table.read_text(), end="")
    print(f"\nrows appended to {(args.csv or harness.DEFAULT_CSV).resolve()}; table in {table}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from .train import TrainConfig, Trainer
    from .train.tasks import TASKS

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but no CUDA GPU is available")
    task = TASKS[args.task](args.seed)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr or task.lr,
        warmup_steps=min(100, args.steps // 10),
        amp=args.amp, seed=args.seed, out_dir=str(args.out / args.task), chunk_size=args.chunk_size or 0,
        log_every=max(1, args.steps // 20),
    )
    trainer = Trainer(task.model, task.dataset, config, args.device, collate_fn=task.collate_fn)
    if args.resume is not None:
        trainer.load(args.resume)
    logged = trainer.fit(progress=not args.quiet)
    result = {"task": args.task, "steps": trainer.step, "final_loss": logged[-1]["loss"] if logged else None,
              **task.evaluate(trainer.model)}
    print(json.dumps(result))
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
        description="Runs benchmarks/bench_<op>.py with pytest-benchmark in a subprocess, appends the "
        "rows to a CSV and prints the table. Environment variables (THP_MEM_ALLOC_ENABLE, "
        "SSL_FAST_HUGEPAGES, ...) pass through to the benchmark processes.",
    )
    bench.add_argument("ops", nargs="+", metavar="op", help=f"{', '.join(BENCH_OPS)} or all")
    bench.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    bench.add_argument("--sizes", help="shapes instead of the defaults, e.g. 4096x4096,41x401x127,16M")
    bench.add_argument("--dtypes", help="dtypes instead of the defaults, e.g. float32,bf16")
    bench.add_argument("--rounds", type=int, help="timed rounds per case (default: 10 on cpu, 100 on cuda)")
    bench.add_argument("--csv", type=Path, help="CSV to append rows to (default: benchmarks/out/results.csv)")
    bench.add_argument("--table", type=Path, help="markdown table file (default: benchmarks/out/table.md)")
    bench.add_argument("--json", type=Path, help="also save pytest-benchmark's JSON report here")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    bench.set_defaults(func=_bench)

    train = sub.add_parser(
        "train", help="pre-train a model on a bundled data set, then evaluate it against a baseline",
        description="Tasks: autoencoder (digits, reconstruction), simclr (digits, NT-Xent, linear "
        "probe), mlm (Python's documentation, WordPiece, masked-token accuracy), forecast (sunspots, "
        "next 6 years, MAE). Metrics go to OUT/TASK/metrics.jsonl, the checkpoint to "
        "OUT/TASK/checkpoint.pt; the last line printed is the evaluation as JSON.",
    )
    train.add_argument("task", choices=("autoencoder", "simclr", "mlm", "forecast"))
    train.add_argument("--steps", type=_positive, default=500)
    train.add_argument("--batch-size", type=_positive, default=128)
    train.add_argument("--lr", type=float, help="learning rate (default: the task's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--amp", choices=("bf16", "fp16"), help="autocast dtype (fp16 on CUDA only)")
    train.add_argument("--chunk-size", type=_positive,
                       help="simclr: gradient caching in chunks of this many images")
    train.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    train.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    train.add_argument("--resume", type=Path, help="a checkpoint.pt to continue from")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # a user error: one line, exit status 2
        print(f"ssl_fast: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
