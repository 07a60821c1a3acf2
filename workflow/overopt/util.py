"""Small shared helpers: seeding, atomic outputs, progress lines with time left."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("overopt")


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s", force=True
    )


# mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_mb: int = 32, trim_mb: int = 256) -> bool:
    """Have glibc's malloc keep freed tensor memory for the next tensor instead of returning it
    to the kernel. By default it maps blocks from 128 KB up to a threshold that moves with the
    frees it sees and trims the heap's free top, so the activations of every forward and
    backward pass page-fault in again: 320-440k page faults in 40 PPO steps of the default study,
    86-91k with blocks up to 32 MB on the heap and 256 MB of free top kept; the same outputs, 0-9%
    less time by kind of job (docs/engine.md). Larger blocks are still mapped and returned.
    Glibc only; elsewhere nothing changes."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    # fixing either threshold turns off the other's adjustment too: both are set
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20) and libc.mallopt(_M_TRIM_THRESHOLD, trim_mb << 20))


def seed_everything(seed: int, threads: int | None = None) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def device():
    """Where models run: the GPU when the job has one (real scale), else the CPU.

    `OVEROPT_DEVICE=cpu` keeps a job on the CPU on a GPU machine (to reproduce the tiny world's
    CPU numbers there). Under SLURM a job that asks for no GPU sees none, so it runs on the CPU.
    """
    import torch

    name = os.environ.get("OVEROPT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast():
    """bf16 mixed precision on a GPU (the throughput `overopt plan` assumes); on the CPU nothing,
    so CPU runs compute in float32 exactly as before."""
    import torch

    dev = device()
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this job's device multiplies bf16 matrices in hardware: a GPU that supports bf16,
    or a CPU with AVX512-BF16, AMX or Arm's BF16 extension. Without them PyTorch emulates bf16 on the CPU, and a bf16
    matmul ran 46x slower than float32 (0.86 against 39.6 GFLOP/s, 1 thread, on an AVX2-only
    EPYC; measured). Read from the CPU's flags, not timed, so a machine always decides the same."""
    import torch

    if cpuinfo is None and device().type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = (Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo).split()
    except OSError:  # not Linux: no flags to read, so take the safe side
        return False
    # x86 names them avx512_bf16 / amx_bf16; Arm's "Features" line names bf16 (Graviton3, ...)
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(flags))


def resolve_dtype(name: str):
    """A config precision as a torch dtype; `auto` is bf16 where `native_bf16()`, else float32."""
    import torch

    if name == "auto":
        return torch.bfloat16 if native_bf16() else torch.float32
    return getattr(torch, name)


def generator(seed: int):
    """A seeded torch.Generator on the models' device (CUDA sampling needs a CUDA generator)."""
    import torch

    return torch.Generator(device=device()).manual_seed(seed)


@contextlib.contextmanager
def atomic_dir(final: str | Path):
    """Yield a temporary sibling directory; rename it to `final` only if the block succeeds."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_file(final: str | Path):
    """Yield a temporary sibling path; rename it to `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}{final.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_json(obj, path: str | Path) -> None:
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


class Progress:
    """Logs `step/total`, the latest metrics, elapsed time and estimated time left."""

    def __init__(self, what: str, total: int, every_s: float = 5.0):
        self.what, self.total, self.every_s = what, total, every_s
        self.t0 = time.time()
        self.last = -1e9

    def __call__(self, step: int, force: bool = False, **metrics) -> None:
        now = time.time()
        if not force and now - self.last < self.every_s and step < self.total:
            return
        self.last = now
        el = now - self.t0
        left = el / max(step, 1) * (self.total - step)
        ms = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        log.info("%s step %d/%d %s elapsed=%.1fs left=%.1fs", self.what, step, self.total, ms, el, left)

    @property
    def elapsed(self) -> float:
        return time.time() - self.t0
