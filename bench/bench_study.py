"""The whole default study's cost, in one run: wall time, job time by rule, the critical path, the
predicted wall time on more cores, and this machine's speed.

    python bench/bench_study.py [--configfile config.yaml] [--cores 2] [--workdir DIR] [--report-only]

Runs `snakemake --cores N` from an empty results directory in a fresh work directory (nothing
reused from an earlier run), then prints:

- the wall time, and the summed job wall and CPU time and job count per rule (each job's `benchmark:`
  file: the numbers to compare between two versions on one machine);
- every job's time from Snakemake's own records (start to end, aggregation jobs included), the
  critical path (the longest chain of jobs) and the wall time a greedy schedule of those jobs
  would take on 2, 8 and 16 cores (`overopt.jobtimes`);
- the CPU model and a plain 512^3 matmul rate in float32 and bfloat16, measured before and after
  the run with the same number of threads as one job uses, so that runs on different machines
  or under different load can be put side by side as ratios.

`--report-only` prints the same for a finished run in `--workdir` without running anything.
"""

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))


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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configfile", default=str(ROOT / "config.yaml"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="default: a new temporary directory")
    ap.add_argument("--report-only", action="store_true", help="report on the finished run in --workdir")
    a = ap.parse_args()
    if a.report_only and not a.workdir:
        sys.exit("--report-only needs --workdir")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="overopt-study-"))
    work.mkdir(parents=True, exist_ok=True)
    before, before16 = matmul_gflops(), matmul_gflops(dtype=torch.bfloat16)
    wall = None
    if not a.report_only:
        snakemake = Path(sys.executable).parent / "snakemake"
        cmd = [str(snakemake), "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile",
               str(Path(a.configfile).resolve()), "--cores", str(a.cores), "--quiet", "rules"]
        t = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if run.returncode:
            sys.exit(f"snakemake failed ({run.returncode}):\n{run.stderr[-3000:]}")
    after, after16 = matmul_gflops(), matmul_gflops(dtype=torch.bfloat16)
    import yaml

    from overopt.jobtimes import format_times, read_jobs

    out = yaml.safe_load(Path(a.configfile).read_text()).get("outdir", "results")
    from overopt.summary import timing_table

    bench = work / out / "benchmarks"
    times = timing_table([(f.relative_to(bench).parts[0], str(f)) for f in bench.rglob("*.tsv")])
    by_rule = {r.rule: (r.jobs, r.job_seconds) for r in times.itertuples() if r.rule != "all"}
    print(f"study: {a.configfile} in {work}")
    print(f"CPU: {cpu_model()}, {a.cores} cores used")
    if wall is not None:
        print(f"wall time: {wall:.0f} s ({wall / 60:.1f} min) on {a.cores} cores")
    print(f"{'rule':<16}{'jobs':>6}{'job wall s':>12}   (benchmark: files)")
    for rule, (n, s) in sorted(by_rule.items(), key=lambda kv: -kv[1][1]):
        print(f"{rule:<16}{n:>6}{s:>12.0f}")
    every = times[times["rule"] == "all"].iloc[0]  # timing_table's own total row
    total = every["job_seconds"]
    print(f"{'heavy jobs':<16}{int(every['jobs']):>6}{total:>12.0f}   (/ {a.cores} cores = {total / a.cores:.0f} s)")
    print(f"\nevery job, from Snakemake's records in {work}/.snakemake/metadata:")
    print(format_times(read_jobs(work), outdir=out), end="")
    print(f"\nmatmul (1 thread, 512^3): float32 {before:.1f} GFLOP/s before, {after:.1f} after; "
          f"bfloat16 {before16:.1f} before, {after16:.1f} after ({(before16 + after16) / (before + after):.2f}x float32)")
    from overopt.util import resolve_dtype

    print(f"bon.score_dtype auto -> {resolve_dtype('auto')}")
    rate = (before + after) / 2
    print(f"job seconds x float32 GFLOP/s: {total * rate / 1e3:.1f} TFLOP-equivalents"
          + (f"; wall x GFLOP/s: {wall * rate / 1e3:.1f}" if wall is not None else ""))


if __name__ == "__main__":
    main()
