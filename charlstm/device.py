"""Where the arithmetic runs: device choice (--device), numeric precision (--precision), CPU
threads (--threads) and the backend switches that go with them (TF32 on CUDA, autocast, the
fp16 gradient scaler)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator

import torch

from charlstm.config import DEVICES, PRECISIONS
from charlstm.errors import EXIT_USAGE, CharlstmError

_DEVICE_CHOICES = ", ".join((*DEVICES[:3], "cuda:N", *DEVICES[3:]))  # as messages list them
_FIXED_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")  # auto: resolve_precision
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(CharlstmError):
    """The requested device or precision is not available here."""


def resolve_device(spec: str) -> torch.device:
    """auto → the first CUDA GPU, else Apple's MPS, else the CPU; otherwise the device named."""
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(
            f"unknown --device {spec!r}; choose {_DEVICE_CHOICES}", EXIT_USAGE
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda: no CUDA GPU is visible to this torch build")
        count = torch.cuda.device_count()
        index = device.index or 0
        if index >= count:
            raise DeviceError(f"--device {spec}: there are only {count} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps: Apple's Metal backend is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported --device {spec!r}; choose {_DEVICE_CHOICES}")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto → bf16 on a CPU that runs it natively (measured 1.25-1.45x faster to the same loss,
    BENCHMARKS.md), else fp32 (TF32 on CUDA, where bf16 gained nothing at small batches)."""
    if precision.strip().lower() != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def precision_available(precision: str, device: torch.device) -> bool:
    """Whether `precision` runs natively on `device`."""
    try:
        check_precision(precision, device)
    except DeviceError:
        return False
    return True


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in _FIXED_PRECISIONS:
        raise DeviceError(
            f"unknown --precision {precision!r}; choose {', '.join(_FIXED_PRECISIONS)}", EXIT_USAGE
        )
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("--precision fp16 needs a GPU; use fp32 (or bf16) on the CPU", EXIT_USAGE)
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        # Emulated bf16 runs ~100x slower than fp32 on such CPUs.
        raise DeviceError(
            "--precision bf16 on the CPU needs bf16 instructions (AVX512-BF16 or AMX), which "
            "this CPU lacks; use fp32"
        )


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (then bf16 LSTMs are ~1.3-2x fp32's speed)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def usable_cores() -> int:
    """The cores this process may run on: fewer than the machine's under taskset, a cgroup
    cpuset or a container's CPU list."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


def set_threads(threads: int, streams: int | None = None) -> int:
    """CPU threads for torch: the number given, or for 0 the cores (shared among the processes
    torchrun started on this machine) that a short probe finds pay (`threads_that_pay`), except
    for the work of one stream (a sample, a per-line pass, a trace): each of its steps is a
    matrix-vector product that a second core barely speeds up, and that slows down many times
    over when another process holds that core (BENCHMARKS.md, "Threads"). Returns the number set."""
    from charlstm.training.distributed import local_size

    if threads <= 0:
        cores = max(1, usable_cores() // local_size())
        threads = 1 if streams == 1 else threads_that_pay(cores)
    torch.set_num_threads(threads)
    return threads


# The probe: matrix products of a training step's shape (a batch of 64 rows through a 512-wide
# layer's four gates), 3 a round, rounds until PROBE_SECONDS have passed (at least one).
PROBE_SHAPE = (64, 512, 2048)
PROBE_SECONDS = 0.2
# Fewer threads are taken only where they are this much faster: on an idle machine the counts
# tie on small products, and all cores then stay the default.
PROBE_MARGIN = 0.9


def threads_that_pay(cores: int) -> int:
    """The thread count, of all `cores`, one fewer, or one, that runs matrix products fastest
    here now (a probe of about 0.2 s; more threads unless fewer are clearly faster).

    Why measure: torch's threads meet at a barrier after every operation, so a core that
    another process holds stalls all of them. With one of two cores kept busy (2026-12-01, a
    shell loop), training 2×256 (32 × 64, bf16) ran at 259-303 tok/s on 2 threads against
    3,800-6,700 on 1, and a 20 s budget spent 54 s measuring sizes; the machine's load average
    cannot tell that apart from work that leaves a core free, the probe does."""
    if cores <= 1:
        return max(1, cores)
    counts = sorted({cores, cores - 1, 1}, reverse=True)
    m, k, n = PROBE_SHAPE
    a, w = torch.ones(m, k), torch.full((k, n), 1e-3)  # no random draw: seeds stay untouched
    before = torch.get_num_threads()
    times: dict[int, list[float]] = {c: [] for c in counts}
    try:
        for c in counts:  # warm each pool once
            torch.set_num_threads(c)
            torch.mm(a, w)
        start = time.perf_counter()
        while not times[1] or (len(times[1]) < 5 and time.perf_counter() - start < PROBE_SECONDS):
            for c in counts:
                torch.set_num_threads(c)
                t = time.perf_counter()
                for _ in range(3):
                    torch.mm(a, w)
                times[c].append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    best = counts[0]
    for c in counts[1:]:
        if statistics.median(times[c]) < PROBE_MARGIN * statistics.median(times[best]):
            best = c
    return best


def configure(device: torch.device) -> None:
    """Allow TF32 tensor cores for fp32 matrix products and cuDNN RNNs (Ampere and later):
    the usual trade of ~10 mantissa bits in products for several times the speed."""
    if device.type != "cuda":
        return
    torch.cuda.set_device(device)
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch ≥ 2.9; the allow_tf32 flags are deprecated
        matmul.fp32_precision = "tf32"
        torch.backends.cudnn.rnn.fp32_precision = "tf32"
    else:  # pragma: no cover - older torch
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for the forward pass; fp32 is a no-op."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
