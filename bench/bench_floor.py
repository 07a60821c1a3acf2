"""How far each heavy job of a finished study is from this machine's matmul rate.

    python bench/bench_floor.py --workdir DIR [--rules ppo score_gold ...]

For the longest job of each heavy rule in a finished run (README command 1's directory, or
`bench/bench_study.py --workdir`), reruns the job's own `overopt` command in this process under
torch's FLOP counter, its outputs sent to a scratch directory, and prints beside the job's wall
time in the run (Snakemake's record, start to end):

- the FLOPs of its matrix multiplications (mm, addmm, bmm, forward and backward; the CPU's
  fused attention and every elementwise op are not counted);
- the floor: the seconds those FLOPs take at this machine's own matmul rate, measured in the
  same run (one thread, 512^3, in the precision the job multiplies in: bfloat16 for best-of-n's
  proxy bodies where `bon.score_dtype` resolves to it, float32 for everything else);
- the floor's share of the job's time. No engine that computes the same models in the same
  precision runs a job faster than its floor; the rest of a job's time is GELU, attention,
  layer norms, sampling, Python, I/O and starting the process;
- last, the rules' job seconds in the run, the part of them that is matmuls at this rate (each
  rule's jobs at its longest job's share), and what would remain were every matmul free.
"""

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_study import cpu_model, matmul_gflops  # noqa: E402

HEAVY = ("pretrain", "pool", "pairs", "labels", "score_gold", "loglik_pool", "loglik_pairs", "train_rm",
         "score_proxy", "ppo")
# the options whose values a job writes: sent to the scratch directory
OUTPUTS = ("--out", "--updates", "--by-prompt", "--checkpoint", "--spec-out")


def job_argv(command: str, scratch: Path) -> list[str]:
    """A job's `overopt` arguments with its outputs in `scratch` and without its log redirection."""
    argv = shlex.split(command.split(" > ")[0])
    if argv[0] != "overopt":
        raise ValueError(f"not an overopt command: {command[:80]}")
    argv = argv[1:]
    for i, arg in enumerate(argv[:-1]):
        if arg in OUTPUTS:
            argv[i + 1] = str(scratch / f"{arg[2:]}{Path(argv[i + 1]).suffix}")
    return argv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, help="a finished run of the workflow")
    ap.add_argument("--rules", nargs="+", default=list(HEAVY), choices=HEAVY)
    a = ap.parse_args()
    from overopt.cli import main as overopt
    from overopt.jobtimes import read_jobs
    from overopt.util import resolve_dtype

    work = Path(a.workdir).resolve()
    jobs = read_jobs(work)
    f32, b16 = matmul_gflops(), matmul_gflops(dtype=torch.bfloat16)
    print(f"run: {work}\nCPU: {cpu_model()}; matmul (1 thread, 512^3): float32 {f32:.1f}, bfloat16 {b16:.1f} GFLOP/s")
    print(f"{'rule':<13}{'job s':>7}{'matmul GFLOP':>14}{'floor s':>9}{'floor/job':>11}  job")
    os.chdir(work)  # a job's paths are relative to the run's directory
    total = weighted = 0.0
    for rule in a.rules:
        mine = [j for j in jobs if j.rule == rule and j.command.startswith("overopt ")]
        if not mine:
            continue
        job = max(mine, key=lambda j: j.seconds)
        with tempfile.TemporaryDirectory(prefix="overopt-floor-") as tmp:
            argv = job_argv(job.command, Path(tmp))
            counter = FlopCounterMode(display=False)
            t = time.perf_counter()
            with counter:
                overopt(argv)
            counted = time.perf_counter() - t
        flops = counter.get_total_flops()
        bf16 = rule == "score_proxy" and resolve_dtype(argv[argv.index("--dtype") + 1]) == torch.bfloat16
        floor = flops / ((b16 if bf16 else f32) * 1e9)
        print(f"{rule:<13}{job.seconds:>7.1f}{flops / 1e9:>14,.0f}{floor:>9.1f}{floor / job.seconds:>11.2f}  "
              f"{job.outputs[0]}{' (bf16)' if bf16 else ''}  [{counted:.0f} s under the counter]")
        rule_seconds = sum(j.seconds for j in mine)
        total += rule_seconds
        weighted += rule_seconds * floor / job.seconds
    # each rule's other jobs taken at its longest job's share: its largest models, the most matmul-bound
    print(f"these rules' {total:.0f} job s in the run hold about {weighted:.0f} s of matmuls at this rate "
          f"({weighted / max(total, 1e-9):.2f}); without them {total - weighted:.0f} s would remain")
    after = matmul_gflops()
    print(f"float32 matmul after: {after:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
