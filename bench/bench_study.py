"""The whole default study's cost, in one run: wall time, job time by rule, and this machine's speed.

    python bench/bench_study.py [--configfile config.yaml] [--cores 2] [--workdir DIR]

Runs `snakemake --cores N` from an empty results directory in a fresh work directory (nothing
reused from an earlier run), then prints the wall time, the summed job wall time and job count
per rule (from each job's `benchmark:` file), and a plain float32 matmul rate measured before
and after the run with the same number of threads as one job uses. The project's goal is the
default study within 15 minutes on 2 cores; as this machine's speed varies with load, the printed
`wall x GFLOP/s` product is what to compare between machines and runs.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(threads: int = 1, n: int = 512, repeat: int = 20, dtype=torch.float32) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configfile", default=str(ROOT / "config.yaml"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="default: a new temporary directory")
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="overopt-study-"))
    work.mkdir(parents=True, exist_ok=True)
    before, before16 = matmul_gflops(), matmul_gflops(dtype=torch.bfloat16)
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile",
           str(Path(a.configfile).resolve()), "--cores", str(a.cores), "--quiet", "rules"]
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = matmul_gflops()
    if run.returncode:
        sys.exit(f"snakemake failed ({run.returncode}):\n{run.stderr[-3000:]}")
    import yaml

    outdir = work / yaml.safe_load(Path(a.configfile).read_text()).get("outdir", "results")
    by_rule = defaultdict(lambda: [0, 0.0])
    for f in (outdir / "benchmarks").rglob("*.tsv"):
        rule = f.relative_to(outdir / "benchmarks").parts[0]
        s = float(f.read_text().splitlines()[1].split("\t")[0])
        by_rule[rule][0] += 1
        by_rule[rule][1] += s
    print(f"study: {a.configfile} in {work}")
    print(f"wall time: {wall:.0f} s ({wall / 60:.1f} min) on {a.cores} cores; goal 900 s")
    print(f"{'rule':<14}{'jobs':>6}{'job wall s':>12}")
    for rule, (n, s) in sorted(by_rule.items(), key=lambda kv: -kv[1][1]):
        print(f"{rule:<14}{n:>6}{s:>12.0f}")
    total = sum(s for _, s in by_rule.values())
    print(f"{'heavy jobs':<14}{sum(n for n, _ in by_rule.values()):>6}{total:>12.0f}"
          f"   (/ {a.cores} cores = {total / a.cores:.0f} s; the rest is aggregation and idle cores)")
    print(f"matmul (1 thread, 512^3 float32): {before:.1f} GFLOP/s before, {after:.1f} after")
    # `bon.score_dtype: bfloat16` runs proxy scoring at this rate; `auto` takes it only where the
    # CPU flags name bf16 units, so this line shows whether that choice was the fast one here
    from overopt.util import resolve_dtype

    print(f"matmul (1 thread, 512^3 bfloat16): {before16:.1f} GFLOP/s before "
          f"({before16 / before:.2f}x float32); bon.score_dtype auto -> {resolve_dtype('auto')}")
    print(f"wall x GFLOP/s: {wall * (before + after) / 2 / 1e3:.1f} TFLOP-equivalents "
          f"(the goal, 900 s, at this machine's rate: {900 * (before + after) / 2 / 1e3:.1f})")


if __name__ == "__main__":
    main()
