"""A fork server for the jobs of a local run: torch is imported once, not once per job.

Each `overopt` job is a new Python that imports torch, numpy, pandas and pyarrow before any work
(1.3-1.9 s on a 2-core CPU), longer than the work of many tiny-world jobs. On a local Snakemake
run the Snakefile starts one server (`start`), which imports them and waits on a Unix socket. A
job's `overopt` then sends it its arguments, working directory, environment and standard streams
(`run_in_server`); the server forks, the child runs the command as that process would have, and
the exit status comes back. Signals sent to the job are passed on to the child, and a child
whose job has gone is stopped.

A job runs in its own process, as without a server, unless the server runs the same Python with
the same environment (temporary-directory variables and the shell's own aside) and the same
process settings (nice, CPU affinity, resource limits): a job with other threads, another engine
(`OVEROPT_ENGINE`) or another software environment is never forked from a server that imported
torch under other settings. A job on another host (a cluster node) never reaches it, and one the
server cannot fork runs on its own. Its log then says why. The child takes the job's umask, and
dies with the server.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ENV = "OVEROPT_FORKSERVER"  # host:socket path, set for the jobs of a run with a server
# what may differ between a job's environment and the server's: read after the fork, or the
# shell's bookkeeping
PER_JOB = frozenset({ENV, "TMPDIR", "TMP", "TEMP", "TEMPDIR", "PWD", "OLDPWD", "SHLVL", "_", "PS1", "PS2"})
# Snakemake gives a job of n threads these variables = n; the server takes the value of a
# one-thread job, and forks only for jobs that have it
THREAD_VARS = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_DIR_PREFIX = "overopt-fs-"
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
PRELOAD = ("numpy", "torch", "pandas", "pyarrow.parquet", "scipy.optimize", "overopt.models", "overopt.plain",
           "overopt.rm", "overopt.ppo", "overopt.pool", "overopt.gold", "overopt.loglik", "overopt.comparisons")


# --------------------------------------------------------------------------- messages


def _send(conn: socket.socket, obj, fds=()) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(conn, [msg], list(fds))
    else:
        conn.sendall(msg)


def _recv(conn: socket.socket, maxfds: int = 0):
    """One message and the file descriptors sent with it; None at end of stream. It reads no byte
    past its message: the next one (a job's exit status right after its pid) stays for the next call."""
    head, fds, _, _ = socket.recv_fds(conn, 4, maxfds) if maxfds else (conn.recv(4), [], 0, None)
    if not head:
        return None, fds
    try:
        head = _read_exact(conn, 4, head)
        return json.loads(_read_exact(conn, struct.unpack("!I", head)[0])), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _read_exact(conn: socket.socket, n: int, data: bytes = b"") -> bytes:
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            raise ConnectionError("fork server: message cut short")
        data += more
    return data


# --------------------------------------------------------------------------- the job's side


def run_in_server(argv: list[str]) -> int | None:
    """Run `overopt argv` in a child of this run's fork server and return its exit code; None
    where no server takes it (the caller then runs it in this process)."""
    addr = os.environ.get(ENV)
    if not addr:
        return None
    host, _, path = addr.partition(":")
    if host != socket.gethostname():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        _send(conn, {"argv": ["overopt", *argv], "cwd": os.getcwd(), "env": dict(os.environ),
                     "python": _python(), "process": _process(), "umask": _umask()}, fds=(0, 1, 2))
        reply, _ = _recv(conn)
    except OSError as e:
        print(f"overopt: fork server at {path} not reached ({e}); running in this process", file=sys.stderr)
        conn.close()
        return None
    if reply is None or "pid" not in reply:
        print(f"overopt: fork server declined ({(reply or {}).get('refused', 'no answer')}); running in this process",
              file=sys.stderr, flush=True)
        conn.close()
        return None
    pid = reply["pid"]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: _pass_on(pid, s))
    print(f"overopt: forked from the fork server as pid {pid}", file=sys.stderr, flush=True)
    done, _ = _recv(conn)
    if done is None:  # the server went away: its children die with it (`_child`)
        print("overopt: the fork server stopped before the job ended", file=sys.stderr)
        return 1
    code = os.waitstatus_to_exitcode(done["status"])
    # Snakemake's benchmark measures this process, not the child: the child's own numbers
    print(f"overopt: forked job ended with {code}: CPU {done['cpu_s']:.1f} s, max RSS {done['max_rss_kb'] / 1024:.0f} MB",
          file=sys.stderr, flush=True)
    if code < 0:  # the child was killed by a signal: so is the job, as its parent would see it
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # these two have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _python() -> list[str]:
    """The interpreter and the environment it runs in (a venv's python and python3 are one)."""
    return [os.path.realpath(sys.executable), sys.prefix]


# what a shell may set for one process (`nice`, `taskset`, `ulimit`) and a fork would not pass on
_LIMITS = ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS",
           "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_MEMLOCK")


def _process() -> dict:
    import resource

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"nice": os.nice(0), "cpus": cpus,
            "limits": {k: list(resource.getrlimit(getattr(resource, k))) for k in _LIMITS if hasattr(resource, k)}}


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pass_on(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # it has just ended
        pass


# --------------------------------------------------------------------------- the server's side


def _alive(conn: socket.socket) -> bool:
    """A job sends nothing after its request: a readable connection is a closed one."""
    try:
        return bool(conn.recv(1))
    except OSError:
        return False


def _differs(env: dict, own: dict) -> list[str]:
    keys = (set(env) | set(own)) - PER_JOB
    return sorted(k for k in keys if env.get(k) != own.get(k))


def _child(req: dict, fds: list[int], main, mask, server: int) -> int:
    """In the forked child: become the job's process, run its command, return its exit code."""
    import atexit
    import traceback

    _die_with(server)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(req["cwd"])
    os.umask(req["umask"])
    os.environ.clear()
    os.environ.update(req["env"])
    tempfile.tempdir = None  # the job's TMPDIR, not the server's
    sys.argv = req["argv"]
    try:
        code = main(req["argv"][1:])
    except SystemExit as e:  # as the interpreter maps it
        code = e.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException as e:
        traceback.print_exc()
        code = -signal.SIGINT if isinstance(e, KeyboardInterrupt) else 1
    atexit._run_exitfuncs()  # what the job's own interpreter would run at exit
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    if code == -signal.SIGINT:  # as Python ends on an unhandled KeyboardInterrupt: killed by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code or 0


def _die_with(server: int) -> None:
    """A server killed outright (SIGKILL, the OOM killer) cannot stop its children, and its jobs
    then fail: the kernel kills them instead, so that none writes on after its job has ended."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != server:  # the server died before the line above
        os._exit(1)


def serve(path: str, parent: int, main) -> None:
    """Import what jobs need, then fork a child running `main(argv)` for each job that connects,
    until `parent` (the Snakemake that started the server) is gone or SIGTERM arrives."""
    import importlib

    own, process = dict(os.environ), _process()
    # `python -m` put the working directory first on sys.path, where a job's own `overopt` has
    # its bin directory: a module of that name in the workflow's directory must not shadow one
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    for name in PRELOAD:
        importlib.import_module(name)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path + ".tmp")
    srv.listen(64)
    os.replace(path + ".tmp", path)  # jobs find it once it listens
    jobs: dict[int, socket.socket] = {}  # child pid -> its job's connection
    orphans: set[socket.socket] = set()  # connections whose job went away
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # a child's exit wakes the loop through this pipe, so its job hears of it at once
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        while os.getppid() == parent:
            pids = {c: pid for pid, c in jobs.items()}
            ready, _, _ = select.select([srv, wake_r, *(c for c in pids if c not in orphans)], [], [], 1.0)
            for s in ready:
                if s == wake_r:
                    os.read(wake_r, 4096)
                elif s is srv:
                    _accept(srv, jobs, own, process, main, (wake_r, wake_w))
                elif not _alive(s):  # the job was killed: stop its child too
                    orphans.add(s)
                    _pass_on(pids[s], signal.SIGTERM)
            # a SIGTERM between reaping a child and sending its status would lose the status
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            try:
                _reap(jobs, orphans)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    finally:
        for pid in jobs:
            _pass_on(pid, signal.SIGTERM)
        srv.close()
        Path(path).unlink(missing_ok=True)
        if Path(path).parent.name.startswith(_DIR_PREFIX):  # the directory `Server.start` made for it
            shutil.rmtree(Path(path).parent, ignore_errors=True)


def _reap(jobs: dict, orphans: set) -> None:
    """Send each ended child's status to its job."""
    while jobs:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = jobs.pop(pid)
        orphans.discard(conn)
        try:
            _send(conn, {"status": status, "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_kb": usage.ru_maxrss})
        except OSError:
            pass
        conn.close()


_REQUEST = {"argv": list, "cwd": str, "env": dict, "python": list, "process": dict, "umask": int}


def _refuse(conn: socket.socket, fds: list[int], why: str) -> None:
    for fd in fds:
        os.close(fd)
    try:
        _send(conn, {"refused": why})
    except OSError:  # the job is gone already
        pass
    conn.close()


def _accept(srv: socket.socket, jobs: dict, own: dict, process: dict, main, server_fds: tuple) -> None:
    try:
        conn, _ = srv.accept()
    except OSError:  # the job gave up (ECONNABORTED), or no descriptor is free: it runs on its own
        return
    conn.settimeout(10)
    try:
        req, fds = _recv(conn, maxfds=3)
    except (OSError, ValueError):
        conn.close()
        return
    conn.settimeout(None)
    why = None
    if not isinstance(req, dict) or len(fds) != 3 or any(not isinstance(req.get(k), t) for k, t in _REQUEST.items()):
        why = "no job in the request"
    elif req["python"] != _python():
        why = f"another Python ({req['python']}, the server's {_python()})"
    elif differs := _differs(req["env"], own):
        why = "another environment: " + ", ".join(differs)
    elif differs := sorted(k for k in process if req["process"].get(k) != process[k]):
        why = "other process settings: " + ", ".join(differs)
    if why:
        return _refuse(conn, fds, why)
    sys.stdout.flush()
    sys.stderr.flush()
    # a signal for the job that arrives before the child has its own handlers waits for them
    # instead of running the server's; one for the server waits until the child is in `jobs`,
    # where the server's exit stops it
    blocked, server = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS), os.getpid()
    try:
        pid = os.fork()
    except OSError as e:  # no memory or process left for a child: this job runs on its own
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return _refuse(conn, fds, f"fork failed ({e})")
    if pid == 0:
        code = 1
        try:
            srv.close()
            for c in jobs.values():
                c.close()
            conn.close()
            for fd in server_fds:
                os.close(fd)
            code = _child(req, fds, main, blocked, server)
        except BaseException:  # on the job's stderr where it got that far, else in the server's log
            import traceback

            traceback.print_exc()
        finally:  # never back into the server's loop
            os._exit(code)
    try:
        for fd in fds:
            os.close(fd)
        jobs[pid] = conn
        try:
            _send(conn, {"pid": pid})
        except OSError:  # the job is gone already: the loop sees its connection closed
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


# --------------------------------------------------------------------------- the workflow's side


class Server:
    """The fork server of one Snakemake run: `start()` from the Snakefile's onstart, `stop()` from
    onsuccess and onerror. Its own log: `log`."""

    def __init__(self, log: str):
        self.log, self.proc, self.dir = Path(log), None, None

    def start(self) -> None:
        """Start the server and point this process's jobs to it. It is not waited for: a job that
        starts before the server listens runs in its own process."""
        # a short path: a Unix socket's is limited to about 100 bytes
        self.dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        path = self.dir / "socket"
        env = {**os.environ, **{k: "1" for k in THREAD_VARS}}
        env.pop(ENV, None)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "overopt.cli", "fork-server", "--socket", str(path), "--parent", str(os.getpid())],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        os.environ[ENV] = f"{socket.gethostname()}:{path}"

    def stop(self) -> None:
        os.environ.pop(ENV, None)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
