"""Jobs forked from the fork server compute what they compute alone, and behave as processes:
exit codes, error output and signals pass through; a job whose environment differs from the
server's runs in its own process."""

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN
from overopt.forkserver import ENV, THREAD_VARS, Server, run_in_server, serve

SPEC = json.dumps({"n_layer": 2, "n_embd": 32, "n_head": 2})


@pytest.fixture
def started(tmp_path, monkeypatch):
    """A running fork server, as the Snakefile starts one."""
    for k in THREAD_VARS:
        monkeypatch.setenv(k, "1")  # Snakemake's for a one-thread job
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(ENV, raising=False)
    s = Server(str(tmp_path / "server.log"))
    s.start()
    sock = os.environ[ENV].partition(":")[2]
    t0 = time.monotonic()
    while not os.path.exists(sock):
        assert time.monotonic() - t0 < 60, (tmp_path / "server.log").read_text()
        time.sleep(0.05)
    yield s
    s.stop()
    monkeypatch.delenv(ENV, raising=False)
    assert not os.path.exists(sock) and s.proc.poll() is not None


@pytest.fixture
def server(started):
    """The environment of a running fork server's jobs."""
    return dict(os.environ)


def overopt(env, *args, cwd):
    return subprocess.run([str(BIN / "overopt"), *args], env=env, cwd=cwd, capture_output=True, text=True)


def pretrain_args(out, steps=30):
    return ["pretrain", "--spec", SPEC, "--tokenizer", "tok", "--out", out, "--steps", str(steps), "--batch-size", "16",
            "--seq-len", "64", "--lr", "0.003", "--seed", "0"]


def test_a_forked_job_writes_the_bits_of_a_job_run_alone(server, tmp_path):
    alone = {k: v for k, v in server.items() if k != ENV}
    assert overopt(alone, "tokenizer", "--out", "tok", cwd=tmp_path).returncode == 0
    forked = overopt(server, *pretrain_args("forked"), cwd=tmp_path)
    own = overopt(alone, *pretrain_args("alone"), cwd=tmp_path)
    assert forked.returncode == 0 and own.returncode == 0, forked.stderr + own.stderr
    assert "forked from the fork server" in forked.stderr and "fork server" not in own.stderr
    assert "pretrain" in forked.stderr  # the job's own log lines reach the job's stderr
    end = forked.stderr.strip().splitlines()[-1]  # the child's own CPU time and memory
    assert end.startswith("overopt: forked job ended with 0: CPU ") and float(end.split()[7]) > 0.1, end
    assert 50 < float(end.split()[-2]) < 2000, end
    for f in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (tmp_path / "forked" / f).read_bytes() == (tmp_path / "alone" / f).read_bytes(), f
    m = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("forked", "alone")]
    for x in m:
        x.pop("seconds")
    assert m[0] == m[1] and m[0]


def test_exit_codes_and_error_output_pass_through(server, tmp_path):
    alone = {k: v for k, v in server.items() if k != ENV}
    assert overopt(alone, "tokenizer", "--out", "tok", cwd=tmp_path).returncode == 0
    no_width = pretrain_args("m")
    no_width[no_width.index(SPEC)] = json.dumps({"n_layer": 2, "n_head": 2})
    for args, code, says in ((["pretrain", "--steps", "x"], 2, "--steps"), (no_width, 1, "KeyError: 'n_embd'")):
        forked, own = overopt(server, *args, cwd=tmp_path), overopt(alone, *args, cwd=tmp_path)
        assert "forked from the fork server" in forked.stderr
        assert forked.returncode == own.returncode == code
        last = lambda r: [x for x in r.stderr.strip().splitlines() if not x.startswith("overopt: forked")][-1]
        assert last(forked) == last(own) and says in last(own), own.stderr


def test_the_child_runs_in_the_jobs_directory_with_its_environment(tmp_path, monkeypatch, capfd):
    """What may differ between a job and the server (its TMPDIR) is the job's in the child, and so
    are its working directory, arguments and standard output."""
    import socket

    def main(argv):
        print(os.environ.get("TMPDIR"), os.getcwd(), oct(os.umask(0)), *argv, flush=True)
        return 3

    server, sock = _in_process_server(tmp_path, lambda sock: serve(sock, os.getppid(), main))
    try:
        (tmp_path / "job").mkdir()
        monkeypatch.chdir(tmp_path / "job")
        monkeypatch.setenv("TMPDIR", str(tmp_path / "jobtmp"))
        monkeypatch.setenv(ENV, f"{socket.gethostname()}:{sock}")
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        umask = os.umask(0o027)
        try:
            assert run_in_server(["a", "b"]) == 3
        finally:
            os.umask(umask)
            for sig, h in handlers.items():
                signal.signal(sig, h)
        assert f"{tmp_path / 'jobtmp'} {tmp_path / 'job'} 0o27 a b" in capfd.readouterr().out
    finally:
        server.terminate()
        server.join(30)


def test_a_job_in_another_environment_runs_in_its_own_process(server, tmp_path):
    r = overopt({**server, "OVEROPT_ENGINE": "hf"}, "tokenizer", "--out", "tok", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "tok").is_dir()
    assert "declined (another environment: OVEROPT_ENGINE)" in r.stderr
    r = overopt({**server, "OMP_NUM_THREADS": "2"}, "tokenizer", "--out", "tok2", cwd=tmp_path)
    assert "declined" in r.stderr and "OMP_NUM_THREADS" in r.stderr and (tmp_path / "tok2").is_dir()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_job_takes_its_forked_child_with_it(server, tmp_path, sig):
    """SIGTERM is passed on to the child; after SIGKILL, which the job cannot pass on, the server
    sees the job's connection close and stops the child."""
    p, child = _long_job(server, tmp_path)
    os.kill(child, 0)  # running
    p.send_signal(sig)
    assert p.wait(30) == -sig  # as a job run alone ends
    assert _gone(child), f"child {child} still running"
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_the_server_ends_with_the_run_that_started_it(tmp_path):
    """A Snakemake killed before its onerror runs leaves no server behind."""
    code = ("import os, sys, time; from overopt.forkserver import Server, ENV; s = Server(sys.argv[1]); s.start(); "
            "p = os.environ[ENV].partition(':')[2]\nwhile not os.path.exists(p): time.sleep(0.05)\n"
            "print(s.proc.pid, p, flush=True); os._exit(0)")
    out = subprocess.run([str(BIN / "python"), "-c", code, str(tmp_path / "log")], capture_output=True, text=True,
                         timeout=120)
    pid, sock = out.stdout.split()
    def running():  # an exited process that nobody has reaped yet is a zombie (Z)
        try:
            return " Z" not in open(f"/proc/{pid}/stat").read().split(")")[-1][:3]
        except FileNotFoundError:
            return False

    t0 = time.monotonic()
    while running() and time.monotonic() - t0 < 10:
        time.sleep(0.1)
    assert not running() and not os.path.exists(os.path.dirname(sock))  # nor its socket's directory


def test_a_message_is_read_alone_when_the_next_has_arrived_with_it():
    """A quick job's exit status can reach the job in the same read as its pid."""
    import socket

    from overopt.forkserver import _recv, _send

    a, b = socket.socketpair()
    _send(a, {"pid": 5})
    _send(a, {"status": 0})
    a.close()
    assert [_recv(b)[0] for _ in range(3)] == [{"pid": 5}, {"status": 0}, None]


def _in_process_server(tmp_path, target):
    """A fork server forked from this test's process, `target(socket path)`, once it listens."""
    import multiprocessing

    sock = str(tmp_path / "s")
    server = multiprocessing.get_context("fork").Process(target=target, args=(sock,))
    server.start()
    t0 = time.monotonic()
    while not os.path.exists(sock):
        assert time.monotonic() - t0 < 60 and server.is_alive()
        time.sleep(0.05)
    return server, sock


def _no_fork(sock):
    def fail():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    os.fork = fail  # in the server's own process only
    serve(sock, os.getppid(), lambda argv: 0)


def test_a_job_the_server_cannot_fork_runs_in_its_own_process(tmp_path, monkeypatch, capfd):
    import socket

    server, sock = _in_process_server(tmp_path, _no_fork)
    try:
        monkeypatch.setenv(ENV, f"{socket.gethostname()}:{sock}")
        for _ in range(2):  # and the server goes on
            assert run_in_server(["a"]) is None
            assert "fork server declined (fork failed ([Errno 11]" in capfd.readouterr().err
            assert server.is_alive()
    finally:
        server.terminate()
        server.join(30)


def _long_job(env, tmp_path):
    assert overopt(env, "tokenizer", "--out", "tok", cwd=tmp_path).returncode == 0
    p = subprocess.Popen([str(BIN / "overopt"), *pretrain_args("m", steps=10**6)], env=env, cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    assert "forked from the fork server as pid" in line, line
    return p, int(line.split()[-1])


def _gone(pid, within=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_job_whose_child_is_killed_outright_ends_killed(server, tmp_path):
    """As a job run alone ends when the OOM killer takes it."""
    p, child = _long_job(server, tmp_path)
    os.kill(child, signal.SIGKILL)
    assert p.wait(30) == -signal.SIGKILL, p.stderr.read()


def test_children_die_with_a_server_killed_outright(started, server, tmp_path):
    p, child = _long_job(server, tmp_path)
    started.proc.kill()
    assert p.wait(30) == 1
    gone = _gone(child)
    if not gone:
        os.kill(child, signal.SIGKILL)  # it holds the job's stderr open
    assert gone, f"child {child} still running"
    assert "fork server stopped before the job ended" in p.stderr.read()
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_a_job_under_other_process_settings_runs_in_its_own_process(server, tmp_path):
    r = subprocess.run(["nice", "-n", "3", str(BIN / "overopt"), "tokenizer", "--out", "tok"], env=server, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "tok").is_dir()
    assert "declined (other process settings: nice)" in r.stderr
