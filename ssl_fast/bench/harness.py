"""The benchmark harness shared by every op, on top of pytest-benchmark.

A family module (ssl_fast.bench.contrastive, ...) declares what to run: `BENCHES`, a
list of OpBench (op, providers, default shapes, bytes moved), and one test
`def test_<family>(case, measure): measure(case)`. The plugin (ssl_fast.bench.plugin)
turns the declarations and its --bench-* options into Cases (op x provider x mode x
shape x dtype, on one device). This module does the rest: it times a case through the
`benchmark` fixture, measures its peak memory (on the CPU in a fresh process), reports
achieved bandwidth on CUDA, records a case that cannot run (a peer not installed, a
case too large for memory) with its reason, appends CSV rows and builds the markdown
table.
"""

from __future__ import annotations

import csv
import ctypes
import datetime
import functools
import gc
import importlib
import math
import multiprocessing
import multiprocessing.context
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
import torch

import ssl_fast

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

Shape = tuple[int, ...]

MODES = ("forward", "backward", "full")
MEMORY_MODES = ("forward", "full", "step")  # backward's peak mostly depends on what the forward saved
REFERENCE, FUSED = "torch", "ssl_fast"  # the speed-up column is REFERENCE / FUSED
SEED = 0
MIB = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter, from glibc's malloc.h

# Relative to the working directory, whether ssl_fast runs from a checkout or is installed.
OUT_DIR = Path("bench-out")
DEFAULT_CSV = OUT_DIR / "results.csv"
DEFAULT_TABLE = OUT_DIR / "table.md"
CSV_FIELDS = (
    "op", "provider", "mode", "shape", "dtype", "device", "metric", "value",
    "machine", "torch", "commit", "env", "timestamp",
)
# Metrics of a case that was not measured; their value is the reason.
SKIPPED, OUT_OF_MEMORY = "skipped", "out_of_memory"
NOTES = (SKIPPED, OUT_OF_MEMORY)
# Environment variables that change the numbers: recorded with every row and table.
TRACKED_ENV = ("THP_MEM_ALLOC_ENABLE", "SSL_FAST_HUGEPAGES", "SSL_FAST_BACKEND", "OMP_NUM_THREADS")

_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}
_SIZE_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class OpBench:
    """One op as its family module declares it.

    providers: name -> "module:function", imported when a case runs. "torch" is the reference.
    requires: provider -> the module it imports (a peer library): where that module cannot
      be imported, the provider's cases are recorded as skipped with the reason.
    default_cases: device type -> ((shape, dtype name), ...) run when no option says otherwise.
    bytes_moved(mode, shape, element_size): the bytes the fused kernel must move on CUDA,
      for the achieved-bandwidth columns; None where the op is not bandwidth-bound.
    flops(mode, shape): the useful floating-point operations of the op on CUDA, for the
      achieved-rate columns (against a bf16 matmul); None where the op is not compute-bound.
    n_inputs: seeded randn tensors of the case shape passed to the provider;
      the first n_grad_inputs of them require grad in the backward and full modes.
    max_rounds: caps the timed rounds, for ops whose rounds take seconds.
    skip(case): why a case cannot run (e.g. a provider for another device), else None.
    too_large(case): why a case would not fit in memory, else None; recorded as out of
      memory, as a case that ran out of it is, so that the plot can mark where each
      provider stopped.
    make_inputs(shape, dtype, device): the provider's inputs instead of randn tensors,
      for ops that take ids or masks, or a model and its batch (called after seeding
      torch's generator).
    count_inputs: the peak memory includes what the inputs hold (tensors, and the
      parameters, gradients and buffers of modules), for steps whose batch must fit a budget.
    """

    name: str
    providers: Mapping[str, str]
    default_cases: Mapping[str, Sequence[tuple[Shape, str]]]
    bytes_moved: Callable[[str, Shape, int], int] | None = None
    n_inputs: int = 2
    n_grad_inputs: int = 1
    modes: Sequence[str] = MODES
    max_rounds: int | None = None
    skip: Callable[[Case], str | None] | None = None
    make_inputs: Callable[[Shape, torch.dtype, torch.device], list] | None = None
    count_inputs: bool = False
    flops: Callable[[str, Shape], int] | None = None
    requires: Mapping[str, str] = field(default_factory=dict)
    too_large: Callable[[Case], str | None] | None = None


@dataclass(frozen=True)
class Case:
    """One measurement: `module` is the family module that declares `op`."""

    op: str
    provider: str
    mode: str
    shape: Shape
    dtype: str
    device: str
    module: str

    @property
    def id(self) -> str:
        return f"{self.op}-{self.provider}-{self.mode}-{format_shape(self.shape)}-{self.dtype}-{self.device}"

    @property
    def group(self) -> str:
        """pytest-benchmark compares the providers of one op, shape, dtype and mode."""
        return f"{self.op} {self.mode} {format_shape(self.shape)} {self.dtype} {self.device}"


@dataclass(frozen=True)
class Settings:
    """What the --bench-* options chose for one pytest session."""

    device: str
    shapes: tuple[Shape, ...] | None  # None: each op's default cases
    dtypes: tuple[str, ...] | None
    rounds: int
    memory: bool
    csv_path: Path
    table_path: Path
    plot_path: Path | None = None

    @property
    def warmup_rounds(self) -> int:
        return max(2, self.rounds // 5)


def format_shape(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _parse_shape(text: str) -> Shape:
    matches = [re.fullmatch(r"(\d+)([kmg]?)", dim.strip().lower()) for dim in text.split("x")]
    if not all(matches) or any(int(m[1]) == 0 for m in matches):
        raise ValueError(
            f"bad shape {text.strip()!r}: expected positive sizes joined by x, each optionally with K, M or G"
        )
    return tuple(int(m[1]) * _SIZE_SUFFIX[m[2]] for m in matches)


def parse_shapes(text: str) -> tuple[Shape, ...]:
    """'4096x4096,41x401x127,16M' -> ((4096, 4096), (41, 401, 127), (16777216,))."""
    shapes = tuple(_parse_shape(item) for item in text.split(",") if item.strip())
    if not shapes:
        raise ValueError(f"no shape in {text!r}: expected e.g. 4096x4096,41x401x127")
    return shapes


def parse_dtypes(text: str) -> tuple[str, ...]:
    """'float32,bf16' -> ('float32', 'bfloat16'); only floating-point dtypes."""
    names = []
    for item in (part.strip().lower() for part in text.split(",") if part.strip()):
        name = _DTYPE_ALIASES.get(item, item)
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"bad dtype {item!r}: expected float32, bfloat16, float16 or float64")
        names.append(name)
    if not names:
        raise ValueError(f"no dtype in {text!r}: expected e.g. float32,bfloat16")
    return tuple(names)


def build_cases(benches: Sequence[OpBench], module: str, settings: Settings) -> list[Case]:
    """Every (op, shape, dtype, mode, provider) of a family module on the chosen device.
    With --bench-sizes or --bench-dtypes the cases are their product, the option not
    given taking the values of the op's defaults."""
    cases = []
    for bench in benches:
        defaults = bench.default_cases[settings.device]
        if settings.shapes is None and settings.dtypes is None:
            shapes_dtypes = list(defaults)
        else:
            shapes = settings.shapes or tuple(dict.fromkeys(shape for shape, _ in defaults))
            dtypes = settings.dtypes or tuple(dict.fromkeys(dtype for _, dtype in defaults))
            shapes_dtypes = [(shape, dtype) for shape in shapes for dtype in dtypes]
        cases += [
            Case(bench.name, provider, mode, tuple(shape), dtype, settings.device, module)
            for shape, dtype in shapes_dtypes
            for mode in bench.modes
            for provider in bench.providers
        ]
    return cases


def find_bench(case: Case) -> OpBench:
    return next(b for b in importlib.import_module(case.module).BENCHES if b.name == case.op)


def _resolve(spec: str) -> Callable:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def import_problem(module: str) -> str | None:
    """Why `module` cannot be imported ("... is not installed"), None when it can."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == module.partition(".")[0]:
            return f"{module} is not installed"
        return f"{module} cannot be imported ({exc})"
    return None


def why_not_run(bench: OpBench, case: Case) -> tuple[str, str] | None:
    """(SKIPPED or OUT_OF_MEMORY, reason) for a case that cannot run here: a declared skip,
    a peer library that cannot be imported, a case too large for memory; None otherwise."""
    peer = bench.requires.get(case.provider)
    for metric, reason in (
        (SKIPPED, bench.skip and bench.skip(case)),
        (SKIPPED, peer and import_problem(peer)),
        (OUT_OF_MEMORY, bench.too_large and bench.too_large(case)),
    ):
        if reason:
            return metric, reason
    return None


# ---------------------------------------------------------------- one round


@dataclass
class Step:
    """One round of a case: `setup` (untimed) returns the (args, kwargs) of `run` (timed)."""

    setup: Callable[[], tuple[tuple, dict]]
    run: Callable[..., object]
    inputs: list = field(default_factory=list)


def make_step(case: Case) -> Step:
    """Seeded inputs (randn, never zeros, or the op's make_inputs) and the round of the case's
    mode. Gradients are set to None in every setup so that each round allocates them as a
    training step does; on CUDA both setup and run end in a synchronisation, so a round
    times its own work. In the "step" mode the provider runs a whole training step on
    its inputs, its backward included."""
    bench = find_bench(case)
    fn = _resolve(bench.providers[case.provider])
    device = torch.device(case.device)
    torch.manual_seed(SEED)
    needs_grad = case.mode != "forward"
    dtype = getattr(torch, case.dtype)
    if bench.make_inputs is not None:
        inputs = bench.make_inputs(case.shape, dtype, device)
    else:
        inputs = [
            torch.randn(case.shape, dtype=dtype, device=device).requires_grad_(
                needs_grad and i < bench.n_grad_inputs
            )
            for i in range(bench.n_inputs)
        ]
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def clear_grads() -> tuple[tuple, dict]:
        for t in inputs:
            t.grad = None
        return (), {}

    def forward() -> torch.Tensor:
        with torch.no_grad():
            loss = fn(*inputs)
        sync()
        return loss

    def graph() -> tuple[tuple, dict]:  # backward mode: the forward is built here, untimed
        clear_grads()
        loss = fn(*inputs)
        sync()
        return (loss,), {}

    def backward(loss: torch.Tensor) -> None:
        loss.backward()
        sync()

    def full() -> None:
        fn(*inputs).backward()
        sync()

    def step() -> None:
        fn(*inputs)
        sync()

    return {
        "forward": Step(lambda: ((), {}), forward, inputs),
        "backward": Step(graph, backward, inputs),
        "full": Step(clear_grads, full, inputs),
        "step": Step(lambda: ((), {}), step, inputs),
    }[case.mode]


def time_metrics(seconds: Sequence[float]) -> dict[str, float]:
    """Median with p20 and p80 of the raw round times, in ms."""
    ms = sorted(s * 1e3 for s in seconds)
    if len(ms) == 1:
        return {"time_ms_median": ms[0], "time_ms_p20": ms[0], "time_ms_p80": ms[0]}
    quintiles = statistics.quantiles(ms, n=5, method="inclusive")
    return {"time_ms_median": statistics.median(ms), "time_ms_p20": quintiles[0], "time_ms_p80": quintiles[3]}


# ---------------------------------------------------------------- peak memory


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.M)[1])


def _cpu_baseline() -> int:
    """Resets VmHWM to the current RSS ('5' to clear_refs) and returns that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _proc_status_kib("VmRSS") * 1024


def _cuda_baseline() -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


_PROBES: dict[str, tuple[Callable[[], int], Callable[[], int]]] = {
    "cpu": (_cpu_baseline, lambda: _proc_status_kib("VmHWM") * 1024),
    "cuda": (_cuda_baseline, torch.cuda.max_memory_allocated),
}


def _fix_mmap_threshold() -> None:
    """glibc serves large blocks with mmap, but after the first free of one it raises its
    threshold to that size and keeps later blocks of up to 32 MiB resident in its heap:
    a buffer freed in the warm-up round is then reused unseen, and whether it shows in the
    peak depends on the process's history. A fixed 128 KiB threshold maps every buffer
    when it is allocated and unmaps it when it is freed, so the peak counts all of them."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 128 << 10)


def held_bytes(inputs: Sequence) -> int:
    """Bytes held by the tensors among `inputs` and by the parameters, gradients and
    buffers of the modules among them."""
    tensors: list[torch.Tensor] = []
    for item in inputs:
        if isinstance(item, torch.nn.Module):
            tensors += [*item.parameters(), *item.buffers()]
            tensors += [p.grad for p in item.parameters() if p.grad is not None]
        elif isinstance(item, torch.Tensor):
            tensors.append(item)
    return sum(t.untyped_storage().nbytes() for t in tensors)


def peak_extra_bytes(case: Case) -> int:
    """Peak memory of one round above what is held before it: inputs built, one round
    run to warm up and its results dropped (the round's setup sets gradients to None).
    With OpBench.count_inputs, what the inputs hold is added."""
    if case.device == "cpu":
        _fix_mmap_threshold()
    step = make_step(case)
    args, kwargs = step.setup()
    step.run(*args, **kwargs)
    args, kwargs = step.setup()
    gc.collect()
    # Buffers an allocator keeps for reuse count in the peak, as on CUDA, where
    # max_memory_allocated counts what is allocated, not what is reserved.
    ssl_fast.empty_cache()
    held = held_bytes(step.inputs) if find_bench(case).count_inputs else 0
    baseline, peak = _PROBES[case.device]
    before = baseline()
    step.run(*args, **kwargs)
    return peak() - before + held


@functools.cache
def _fork_server(preload: tuple[str, ...]) -> multiprocessing.context.ForkServerContext:
    """A new Python that imports torch, the family module and its providers once, then
    forks a fresh child per measurement. Each child starts from a process that never ran
    a case, so its memory is a new interpreter's; a new interpreter per case instead would
    spend 3-10 s here on imports."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


def peak_extra_mb(case: Case) -> float:
    """On the CPU in a fresh process: this one's VmHWM (and ru_maxrss) would carry the
    peaks of everything it ran before, and tracemalloc does not see torch's allocations.
    On CUDA the caching allocator's own statistics are exact, in this process."""
    if case.device == "cuda":
        return peak_extra_bytes(case) / MIB
    providers = find_bench(case).providers.values()
    preload = (__name__, case.module, *(spec.partition(":")[0] for spec in providers))
    with _fork_server(tuple(dict.fromkeys(preload))).Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(peak_extra_bytes, (case,)) / MIB


# ---------------------------------------------------------------- largest batch


def largest_batch(
    peak: Callable[[int], float | None], budget: float, start: int = 1, resolution: float = 0.05
) -> tuple[int, float]:
    """The largest batch b with peak(b) <= budget, for a peak that grows with b (None: the
    device ran out of memory). Doubles b from `start` until it no longer fits, then bisects
    until the bounds are within `resolution` of the lower one. Returns the batch and its
    peak; (0, 0.0) when not even a batch of 1 fits."""
    found, found_peak, above = 0, 0.0, start
    while (value := peak(above)) is not None and value <= budget:
        found, found_peak, above = above, value, 2 * above
    while above - found > max(1, resolution * found):
        middle = (found + above) // 2
        if (value := peak(middle)) is not None and value <= budget:
            found, found_peak = middle, value
        else:
            above = middle
    return found, found_peak


def _free_device_memory() -> None:
    """What a round that ran out of memory left: called outside the exception handler, once
    the exception no longer holds the round's frames."""
    gc.collect()
    torch.cuda.empty_cache()


def step_peak_bytes(case: Case) -> float | None:
    """peak_extra_mb of the case, in bytes; None when CUDA ran out of memory."""
    try:
        return peak_extra_mb(case) * MIB
    except torch.OutOfMemoryError:
        pass
    _free_device_memory()
    return None


# The budget of a batch search whose case shape is (CARD,): the CUDA card's free memory.
CARD = 0


@functools.cache
def memory_budget(device: str, shape: Shape) -> int:
    """The budget of a batch search in bytes: the case's shape, (bytes,), or with (CARD,)
    on CUDA, the card's free memory when first asked, so that every provider gets the same."""
    if shape == (CARD,) and device == "cuda":
        torch.cuda.empty_cache()
        return torch.cuda.mem_get_info()[0]
    return shape[0]


@functools.cache
def largest_batch_of(case: Case, budget: int) -> tuple[int, float]:
    """largest_batch of a "step" case, each probe the case with shape (batch,) in its own
    process; cached, since every provider is timed at the batch of the op's first one. The
    doubling starts at 64, a small batch for contrastive learning: smaller probes would cost
    a process each and say nothing."""
    return largest_batch(lambda batch: step_peak_bytes(replace(case, shape=(batch,))), budget, start=64)


# ---------------------------------------------------------------- CUDA bandwidth


def _cuda_median_ms(fn: Callable[[], object], rounds: int) -> float:
    """Median time of fn() over rounds after 3 warm-up calls, timed with CUDA events."""
    for _ in range(3):
        fn()
    times_ms = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times_ms.append(start.elapsed_time(end))
    return statistics.median(times_ms)


def copy_bandwidth_gbps(nbytes: int = 1 << 30, rounds: int = 20) -> float:
    """Device-to-device copy_ of an nbytes tensor (read + write): the ceiling that the
    fused kernels' bandwidth is compared to."""
    src = torch.randn(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / (_cuda_median_ms(lambda: dst.copy_(src), rounds) * 1e-3) / 1e9


MATMUL_SIZE = 8192


def matmul_tflops(n: int = MATMUL_SIZE, rounds: int = 10) -> float:
    """torch.mm of two n x n bf16 matrices (fp32 accumulation): the ceiling that the
    compute-bound kernels' rate is compared to."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    out = torch.empty_like(a)
    return 2 * n**3 / (_cuda_median_ms(lambda: torch.mm(a, b, out=out), rounds) * 1e-3) / 1e12


# ---------------------------------------------------------------- recording


def _source_version() -> str:
    """The commit of the checkout ssl_fast runs from, else (installed) its version."""
    root = Path(ssl_fast.__file__).resolve().parents[1]
    if (root / ".git").exists():  # a folder, or a file in a git worktree
        try:
            done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True)
        except OSError:
            done = None
        if done is not None and done.returncode == 0:
            return done.stdout.strip()
    return f"v{ssl_fast.__version__}"


def _machine(device: str) -> str:
    if device == "cuda":
        return f"{platform.node()} ({torch.cuda.get_device_name()})"
    model = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found[1].strip() if found else model
    return f"{platform.node()} ({model}, {len(os.sched_getaffinity(0))} cores)"


def _tracked_env() -> str:
    return " ".join(f"{k}={os.environ[k]}" for k in TRACKED_ENV if k in os.environ)


@dataclass
class Recorder:
    """Rows of one session: appended to the CSV as they come, kept for the table and plot,
    with the family module of each op."""

    device: str
    csv_path: Path
    rows: list[dict[str, str]] = field(default_factory=list)
    families: dict[str, str] = field(default_factory=dict)
    context: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.context = {
            "machine": _machine(self.device),
            "torch": torch.__version__,
            "commit": _source_version(),
            "env": _tracked_env(),
            "load": f"{os.getloadavg()[0]:.1f}",
            "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def add(self, case: Case, metric: str, value: float | str) -> None:
        """One row; a str value is the reason of a note (SKIPPED, OUT_OF_MEMORY)."""
        row = {
            "op": case.op, "provider": case.provider, "mode": case.mode, "shape": format_shape(case.shape),
            "dtype": case.dtype, "device": case.device, "metric": metric,
            "value": value if isinstance(value, str) else f"{value:.6g}",
            **{k: v for k, v in self.context.items() if k in CSV_FIELDS},
        }
        self.rows.append(row)
        self.families.setdefault(case.op, case.module.rpartition(".")[2])
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        is_new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with open(self.csv_path, "a", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
            if is_new:
                writer.writeheader()
            writer.writerow(row)

    @property
    def measured(self) -> bool:
        """Whether any case was measured (rows other than notes)."""
        return any(row["metric"] not in NOTES for row in self.rows)

    def header(self) -> str:
        c = self.context
        env = f", env {c['env']}" if c["env"] else ""
        return (
            f"{self.device.upper()}, {c['timestamp'][:10]}, {c['machine']}, torch {c['torch']}, "
            f"commit {c['commit']}{env}, load average {c['load']} at the start"
        )


@dataclass
class BenchSession:
    """The state of one pytest session: settings, recorder, CUDA copy bandwidth and matmul rate."""

    settings: Settings
    recorder: Recorder
    copy_gbps: float | None = None
    matmul_tflops: float | None = None

    def measure(self, benchmark: BenchmarkFixture, case: Case) -> None:
        """Times `case` with pytest-benchmark, then records its metrics; a case that cannot
        run, or runs out of memory, is recorded with the reason and skipped."""
        self._check(case)
        try:
            metrics = self._time(benchmark, case)
            if metrics is not None and self.settings.memory and case.mode in MEMORY_MODES:
                metrics["peak_extra_mb"] = peak_extra_mb(case)
        except torch.OutOfMemoryError as exc:
            reason = f"out of memory: {'. '.join(str(exc).split('. ')[:2])}"
        else:
            if metrics is not None:
                metrics.update(self._bandwidth(case, metrics["time_ms_median"]))
                metrics.update(self._compute_rate(case, metrics["time_ms_median"]))
                self._record(benchmark, case, metrics)
            return
        _free_device_memory()
        self._skip(case, OUT_OF_MEMORY, reason)

    def measure_batch(self, benchmark: BenchmarkFixture, case: Case) -> None:
        """For a training step (mode "step", OpBench.count_inputs) whose case shape is a memory
        budget, (bytes,) or (CARD,): the largest batch that fits, its memory per sample, and
        the time per sample of a step at the largest batch of the op's first provider, a
        batch that every provider can run. Records the metrics under `case`."""
        bench = find_bench(case)
        self._check(case)
        if not self.settings.memory:
            self._skip(case, SKIPPED, f"{case.op} searches batches by their peak memory: run it without "
                       "--no-memory")
        budget = memory_budget(case.device, case.shape)
        batch, peak = largest_batch_of(case, budget)
        common, _ = largest_batch_of(replace(case, provider=next(iter(bench.providers))), budget)
        if not batch or not common:
            self._skip(case, OUT_OF_MEMORY, f"not even a batch of 1 fits in {budget / MIB:.0f} MiB")
        metrics = self._time(benchmark, replace(case, shape=(common,)))
        if metrics is None:
            return
        metrics.update(budget_mb=budget / MIB, max_batch=batch, peak_mb=peak / MIB,
                       kib_per_sample=peak / batch / 1024, time_batch=common,
                       ms_per_sample=metrics["time_ms_median"] / common)
        self._record(benchmark, case, metrics)

    def _check(self, case: Case) -> None:
        """Records and skips a case that cannot run here (why_not_run)."""
        found = why_not_run(find_bench(case), case)
        if found is not None:
            self._skip(case, *found)

    def _skip(self, case: Case, metric: str, reason: str) -> NoReturn:
        self.recorder.add(case, metric, reason)
        pytest.skip(reason)

    def _record(self, benchmark: BenchmarkFixture, case: Case, metrics: dict[str, float]) -> None:
        benchmark.extra_info.update(metrics)
        for metric, value in metrics.items():
            self.recorder.add(case, metric, value)

    def _time(self, benchmark: BenchmarkFixture, case: Case) -> dict[str, float] | None:
        """Times `case` with pytest-benchmark: its time metrics, None under --benchmark-disable."""
        bench = find_bench(case)
        rounds = min(self.settings.rounds, bench.max_rounds or self.settings.rounds)
        step = make_step(case)  # freed on return, before any memory measurement
        benchmark.group = case.group
        benchmark.extra_info.update(asdict(case))
        benchmark.pedantic(
            step.run, setup=step.setup, rounds=rounds,
            warmup_rounds=min(self.settings.warmup_rounds, max(1, rounds // 2)), iterations=1,
        )
        if benchmark.disabled:  # --benchmark-disable: ran once, nothing to record
            return None
        return time_metrics(benchmark.stats.stats.data)

    def _bandwidth(self, case: Case, median_ms: float) -> dict[str, float]:
        bytes_moved = find_bench(case).bytes_moved
        if case.device != "cuda" or case.provider != FUSED or bytes_moved is None:
            return {}
        if self.copy_gbps is None:
            self.copy_gbps = copy_bandwidth_gbps()
            copy = Case("copy", "torch", "copy", (1 << 28,), "float32", "cuda", case.module)
            self.recorder.add(copy, "gbps", self.copy_gbps)
        nbytes = bytes_moved(case.mode, case.shape, getattr(torch, case.dtype).itemsize)
        gbps = nbytes / (median_ms * 1e-3) / 1e9
        return {"gbps": gbps, "copy_fraction": gbps / self.copy_gbps}

    def _compute_rate(self, case: Case, median_ms: float) -> dict[str, float]:
        flops = find_bench(case).flops
        if case.device != "cuda" or case.provider != FUSED or flops is None:
            return {}
        if self.matmul_tflops is None:
            self.matmul_tflops = matmul_tflops()
            mm = Case("matmul", "torch", "mm", (MATMUL_SIZE,) * 3, "bfloat16", "cuda", case.module)
            self.recorder.add(mm, "tflops", self.matmul_tflops)
        tflops = flops(case.mode, case.shape) / (median_ms * 1e-3) / 1e12
        return {"tflops": tflops, "matmul_fraction": tflops / self.matmul_tflops}


# ---------------------------------------------------------------- table


def _sig3(value: float) -> str:
    """Three significant digits without an exponent: 163, 36.6, 0.412."""
    digits = 2 - math.floor(math.log10(abs(value))) if value else 1
    return f"{value:.{max(0, digits)}f}"


Cells = dict[tuple[str, str], float | str]  # (provider, metric) -> value, or a note's marker
_MARKERS = {SKIPPED: "skipped", OUT_OF_MEMORY: "OOM"}


def _cells(
    rows: Sequence[dict[str, str]], key: Callable[[dict[str, str]], tuple], marked: str
) -> tuple[dict[tuple, Cells], list[str]]:
    """The cells of each line key(row), a note's marker standing in for its provider's
    metric `marked`, and the providers measured; lines with no measurement are left out."""
    values: dict[tuple, Cells] = {}
    providers: dict[str, None] = {}
    for row in rows:
        cells = values.setdefault(key(row), {})
        if row["metric"] in NOTES:
            cells[(row["provider"], marked)] = _MARKERS[row["metric"]]
        else:
            cells[(row["provider"], row["metric"])] = float(row["value"])
            providers[row["provider"]] = None
    measured = {k: c for k, c in values.items() if any(isinstance(v, float) for v in c.values())}
    return measured, list(providers)


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    """One line per (op, shape, dtype, mode): median ms per provider (or why it was not
    measured: skipped, OOM), torch/ssl_fast, peak extra MiB per provider, and on CUDA
    ssl_fast's GB/s and fraction of copy, or its useful TFLOP/s and fraction of the bf16
    matmul rate."""
    ceilings = ("copy", "matmul")  # printed under the table
    values, providers = _cells([row for row in rows if row["op"] not in ceilings],
                               lambda row: (row["op"], row["shape"], row["dtype"], row["mode"]),
                               "time_ms_median")
    order = sorted(providers, key=lambda p: (p != REFERENCE, p != FUSED))
    metrics_seen = {metric for cells in values.values() for _, metric in cells}

    columns: list[tuple[str, Callable[[dict], str]]] = [
        (f"{p} ms", lambda c, p=p: _cell(c.get((p, "time_ms_median")), _sig3)) for p in order
    ]
    if REFERENCE in providers and FUSED in providers:
        columns.append(("speed-up", _speedup))
    if "peak_extra_mb" in metrics_seen:
        columns += [
            (f"{p} MiB", lambda c, p=p: _cell(c.get((p, "peak_extra_mb")), "{:.1f}".format)) for p in order
        ]
    if "gbps" in metrics_seen:
        columns.append((f"{FUSED} GB/s", lambda c: _cell(c.get((FUSED, "gbps")), "{:.0f}".format)))
        columns.append(("of copy", lambda c: _cell(c.get((FUSED, "copy_fraction")), "{:.0%}".format)))
    if "tflops" in metrics_seen:
        columns.append((f"{FUSED} TFLOP/s", lambda c: _cell(c.get((FUSED, "tflops")), _sig3)))
        columns.append(("of matmul", lambda c: _cell(c.get((FUSED, "matmul_fraction")), "{:.0%}".format)))

    names = ["op", "shape", "dtype", "mode"] + [name for name, _ in columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * 4 + "---:|" * len(columns)]
    for key, cells in values.items():
        lines.append("| " + " | ".join([*key, *(render(cells) for _, render in columns)]) + " |")
    return "\n".join(lines)


def batch_table(rows: Sequence[dict[str, str]]) -> str:
    """One line per (op, budget, dtype) of "step" rows (BenchSession.measure_batch): the
    largest batch per provider and against the first provider's, KiB per sample at that
    batch, and ms per sample of a step at the first provider's largest batch."""
    values, providers = _cells(rows, lambda row: (row["op"], row["shape"], row["dtype"]), "max_batch")
    first = providers[0]

    def each(metric: str, fmt: Callable[[float], str], name: str) -> list[tuple[str, Callable[[dict], str]]]:
        return [(f"{p} {name}", lambda c, p=p: _cell(c.get((p, metric)), fmt)) for p in providers]

    def shared(metric: str) -> Callable[[dict], str]:  # the same for every provider
        return lambda c: _cell(next((v for (_, m), v in c.items() if m == metric), None), "{:.0f}".format)

    columns: list[tuple[str, Callable[[dict], str]]] = [
        ("budget MiB", shared("budget_mb")),
        *each("max_batch", "{:.0f}".format, "batch"),
        *[(f"{p} / {first}", lambda c, p=p: _ratio(c.get((p, "max_batch")), c.get((first, "max_batch"))))
          for p in providers if p != first],
        *each("kib_per_sample", "{:.1f}".format, "KiB/sample"),
        ("timed batch", shared("time_batch")),
        *each("ms_per_sample", _sig3, "ms/sample"),
    ]
    names = ["op", "dtype"] + [name for name, _ in columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * 2 + "---:|" * len(columns)]
    for (op, _, dtype), cells in values.items():
        lines.append("| " + " | ".join([op, dtype, *(render(cells) for _, render in columns)]) + " |")
    return "\n".join(lines)


def _ratio(value: float | str | None, base: float | str | None) -> str:
    measured = isinstance(value, float) and isinstance(base, float) and base
    return f"{value / base:.1f}x" if measured else "-"


def _cell(value: float | str | None, fmt: Callable[[float], str]) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else fmt(value)


def _speedup(cells: Cells) -> str:
    ref, fused = cells.get((REFERENCE, "time_ms_median")), cells.get((FUSED, "time_ms_median"))
    return f"{ref / fused:.2f}x" if isinstance(ref, float) and isinstance(fused, float) and fused else "-"


def not_measured(rows: Sequence[dict[str, str]]) -> list[str]:
    """One line per op, provider and reason of the cases not measured, with their shapes."""
    shapes: dict[tuple[str, str, str], dict[str, None]] = {}
    for row in rows:
        if row["metric"] in NOTES:
            shapes.setdefault((row["op"], row["provider"], row["value"]), {})[row["shape"]] = None
    return [f"- {op}, {provider} ({', '.join(at)}): {reason}"
            for (op, provider, reason), at in shapes.items()]


def write_table(session: BenchSession) -> None:
    """Writes the session's tables (the batch searches apart), under a line that says where
    and how they were measured, and above the cases that were not measured and why."""
    rows = session.recorder.rows
    steps = [row for row in rows if row["mode"] == "step"]
    others = [row for row in rows if row["mode"] != "step"]
    tables = [table(part) for table, part in ((markdown_table, others), (batch_table, steps))
              if any(row["metric"] not in NOTES for row in part)]
    text = f"{session.recorder.header()}\n\n" + "\n\n".join(tables) + "\n"
    if notes := not_measured(rows):
        text += "\nNot measured:\n" + "\n".join(notes) + "\n"
    if session.copy_gbps is not None:
        text += f"\nDevice-to-device copy: {session.copy_gbps:.0f} GB/s (read + write).\n"
    if session.matmul_tflops is not None:
        n = MATMUL_SIZE
        text += f"\nbf16 matmul {n}x{n}x{n} (torch.mm): {session.matmul_tflops:.0f} TFLOP/s.\n"
    session.settings.table_path.parent.mkdir(parents=True, exist_ok=True)
    session.settings.table_path.write_text(text)
