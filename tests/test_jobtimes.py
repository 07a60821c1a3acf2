"""The critical path and the predicted wall time, from Snakemake records written by hand."""

import base64
import json

import pytest

from overopt.jobtimes import critical_path, read_jobs, simulate


def _record(meta, output, rule, inputs, start, end, job_hash, flags=""):
    name = base64.urlsafe_b64encode(output.encode()).decode().rstrip("=")
    (meta / name).write_text(json.dumps({"rule": rule, "input": inputs, "starttime": start, "endtime": end,
                                         "job_hash": job_hash, "incomplete": False,
                                         "shellcmd": f"overopt {rule} --out {output}{flags} > log 2>&1"}))


def test_critical_path_and_schedule_of_a_known_graph(tmp_path):
    meta = tmp_path / ".snakemake" / "metadata"
    meta.mkdir(parents=True)
    # a (10 s) -> dir b/ (5 s, two outputs) -> c (20 s, reads a file inside b/); d (12 s) and e (12 s) alone
    _record(meta, "a", "a", [], 0, 10, 1)
    _record(meta, "b", "b", ["a"], 10, 15, 2)
    _record(meta, "b2", "b", ["a"], 10.000001, 15, 2)
    _record(meta, "c", "c", ["b/x.json"], 15, 35, 3)
    # d and e started first in the run: a schedule in the run's order would put them before a
    _record(meta, "d", "d", [], -2, 10, 4)
    _record(meta, "e", "e", [], -1, 11, 5)
    jobs = read_jobs(tmp_path)
    assert sorted(j.rule for j in jobs) == ["a", "b", "c", "d", "e"]  # b's two outputs are one job
    assert {j.rule: j.command for j in jobs}["c"] == "overopt c --out c > log 2>&1"
    path = [jobs[i].rule for i in critical_path(jobs)]
    assert path == ["a", "b", "c"]
    assert simulate(jobs, 16) == pytest.approx(35)  # enough cores: the critical path
    assert simulate(jobs, 1) == pytest.approx(59)  # one core: every job in turn
    # two cores, longest chain first: a, b, c on one core, d then e on the other (d and e
    # first, in the run's order, would end at 47)
    assert simulate(jobs, 2) == pytest.approx(35)


def test_a_job_holds_the_threads_its_command_was_given(tmp_path):
    """A 2-thread job and a 1-thread job of 10 s each: on 2 cores they run one after the other
    (20 s), where two 1-thread jobs would run side by side (10 s)."""
    meta = tmp_path / ".snakemake" / "metadata"
    meta.mkdir(parents=True)
    _record(meta, "a", "a", [], 0, 10, 1, flags=" --threads 2")
    _record(meta, "b", "b", [], 10, 20, 2, flags=" --threads 1")
    _record(meta, "c", "c", [], 20, 30, 3)
    jobs = read_jobs(tmp_path)
    assert {j.rule: j.threads for j in jobs} == {"a": 2, "b": 1, "c": 1}
    assert simulate(jobs[:2], 2) == pytest.approx(20)
    assert simulate(jobs[1:], 2) == pytest.approx(10)
    assert simulate(jobs[:2], 3) == pytest.approx(10)
