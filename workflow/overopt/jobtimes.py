"""What a finished run cost: job times read from Snakemake's own records, the critical path, and
the wall time the same jobs would take on more cores.

Snakemake keeps one record per output file under `.snakemake/metadata/` (the file name is the
output path, base64-encoded): the rule, the input files, and when the job started and ended.
Those records are the job graph of the run as it happened, so no rule has to be re-derived here.

The predicted wall time on k cores is a greedy list schedule of the measured jobs: whenever
cores are free, start the ready job whose remaining chain (itself plus the longest chain after
it) is longest, each job holding its own `threads`. On 2 cores it should come out close to the
measured wall time; on many cores it approaches the critical path.
"""

from __future__ import annotations

import base64
import heapq
import json
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    rule: str
    outputs: list[str]
    inputs: list[str]
    start: float
    end: float
    threads: int = 1
    after: set[int] = field(default_factory=set)  # indices of the jobs this one read from
    command: str = ""  # the shell command Snakemake ran

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)


def _decode(name: str) -> str:
    return base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()


def read_jobs(workdir: str | Path) -> list[Job]:
    """Every job of the run in `workdir`, with the jobs each one read from."""
    meta = Path(workdir) / ".snakemake" / "metadata"
    if not meta.is_dir():
        raise FileNotFoundError(f"{meta}: no Snakemake records (run the workflow in {workdir} first)")
    by_job: dict[tuple, Job] = {}
    for f in sorted(meta.iterdir()):
        rec = json.loads(f.read_text())
        if rec.get("incomplete") or rec.get("starttime") is None or rec.get("endtime") is None:
            continue
        # one record per output file: a job's records share its hash (their start times differ by microseconds)
        key = (rec["rule"], rec.get("job_hash"))
        command = rec.get("shellcmd") or ""
        # the records keep no thread count; every rule that runs more than one passes it on
        threads = re.search(r"--threads (\d+)", command)
        job = by_job.setdefault(key, Job(rec["rule"], [], list(rec.get("input") or []), rec["starttime"], rec["endtime"],
                                         threads=int(threads[1]) if threads else 1, command=command))
        job.outputs.append(_decode(f.name))
        job.start, job.end = min(job.start, rec["starttime"]), max(job.end, rec["endtime"])
    jobs = sorted(by_job.values(), key=lambda j: (j.start, j.rule))
    producer = {out.rstrip("/"): i for i, j in enumerate(jobs) for out in j.outputs}
    for i, j in enumerate(jobs):
        for path in j.inputs:
            p = path.rstrip("/")
            # a file inside a directory output was made by that directory's job
            while p and p not in producer and "/" in p:
                p = p.rsplit("/", 1)[0]
            if p in producer and producer[p] != i:
                j.after.add(producer[p])
    return jobs


def tails(jobs: list[Job]) -> list[float]:
    """For each job, its seconds plus the longest chain of jobs that waits on it."""
    children: list[list[int]] = [[] for _ in jobs]
    for i, j in enumerate(jobs):
        for k in j.after:
            children[k].append(i)
    memo: dict[int, float] = {}

    def tail(i: int) -> float:
        if i not in memo:
            memo[i] = jobs[i].seconds + max((tail(c) for c in children[i]), default=0.0)
        return memo[i]

    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * len(jobs) + 100))
    return [tail(i) for i in range(len(jobs))]


def critical_path(jobs: list[Job]) -> list[int]:
    """The longest chain of jobs (by measured seconds), first job first."""
    if not jobs:
        return []
    t = tails(jobs)
    children: list[list[int]] = [[] for _ in jobs]
    for i, j in enumerate(jobs):
        for k in j.after:
            children[k].append(i)
    path = [max((i for i, j in enumerate(jobs) if not j.after), key=lambda i: t[i])]
    while children[path[-1]]:
        path.append(max(children[path[-1]], key=lambda i: t[i]))
    return path


def simulate(jobs: list[Job], cores: int) -> float:
    """Wall seconds of a greedy list schedule of `jobs` on `cores` (longest remaining chain first)."""
    t = tails(jobs)
    waiting = [len(j.after) for j in jobs]
    children: list[list[int]] = [[] for _ in jobs]
    for i, j in enumerate(jobs):
        for k in j.after:
            children[k].append(i)
    ready = [(-t[i], i) for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    now, free = 0.0, cores
    while ready or running:
        held = []
        while ready:
            neg, i = heapq.heappop(ready)
            need = min(jobs[i].threads, cores)
            if need <= free:
                free -= need
                heapq.heappush(running, (now + jobs[i].seconds, i))
            else:
                held.append((neg, i))
        for h in held:
            heapq.heappush(ready, h)
        now, i = heapq.heappop(running)
        free += min(jobs[i].threads, cores)
        for c in children[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (-t[c], c))
    return now


def job_label(job: Job, root: str = "") -> str:
    out = job.outputs[0]
    return f"{job.rule} {out[len(root):].lstrip('/') if root and out.startswith(root) else out}"


def format_times(jobs: list[Job], cores=(2, 8, 16), outdir: str = "") -> str:
    """Job seconds by rule, the critical path job by job, and the predicted wall time per core count."""
    by_rule: dict[str, list[float]] = {}
    for j in jobs:
        by_rule.setdefault(j.rule, []).append(j.seconds)
    lines = [f"{'rule':<16}{'jobs':>6}{'job s':>10}{'max s':>8}"]
    for rule, s in sorted(by_rule.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"{rule:<16}{len(s):>6}{sum(s):>10.0f}{max(s):>8.0f}")
    total = sum(j.seconds for j in jobs)
    lines.append(f"{'all jobs':<16}{len(jobs):>6}{total:>10.0f}")
    lines.append(f"core-seconds (each job's seconds x its threads): {sum(j.seconds * j.threads for j in jobs):.0f}")
    path = critical_path(jobs)
    cp = sum(jobs[i].seconds for i in path)
    lines.append(f"critical path: {cp:.0f} s ({cp / 60:.1f} min), {len(path)} jobs:")
    lines += [f"  {jobs[i].seconds:>6.0f} s  {job_label(jobs[i], outdir)}" for i in path]
    lines.append("predicted wall time (greedy schedule of the measured jobs, longest chain first):")
    lines += [f"  {k:>3} cores: {simulate(jobs, k):>6.0f} s ({simulate(jobs, k) / 60:.1f} min)" for k in cores]
    return "\n".join(lines) + "\n"
