"""
The time-bounded sympy worker of answer grading: a separate Python interpreter that runs
grading_symbolic.symbolic_equiv on one pair of normalized answers at a time, killed when
it does not answer in time. It works in any process (forked, spawned, daemonic pool
workers, DataLoader workers, threads).

    from grading_worker import symbolic_equiv_bounded, stop_workers
    ok = symbolic_equiv_bounded(pred_norm, gold_norm, timeout=1.0)  # False on a timeout
    stop_workers()                                                  # kill this process's workers

    python grading_worker.py    # the worker itself (what symbolic_equiv_bounded starts):
                                # prints "ready", then reads one JSON [pred, gold] per line
                                # and answers 1 (equal) or 0 per line

Callers use grading.is_equiv, which calls symbolic_equiv_bounded only for answers that the
fast path could not settle and that pass its cheap guards (length, nesting, exponent size,
whitelisted LaTeX commands). Tests: `python -m pytest tests/test_grading.py`.

How the bound holds. The worker is started with `subprocess` (JSON lines over pipes), one
per calling thread, owned by the process that started it. A subprocess is not a
multiprocessing child, so this works inside daemonic pool workers and DataLoader workers;
a forked child never uses its parent's worker (an at-fork hook forgets it) and starts its
own; threads never queue behind each other. If the worker does not answer within
`timeout` seconds it is killed, the answer counts as not equal, and the next call starts a
fresh one (starting, about a second for the sympy import, is not part of the bound;
WORKER_START_TIMEOUT caps it). A worker exits when its parent does. Verdicts are cached
per normalized pair, timeouts included. Needs select() on pipes: Linux and macOS.
"""

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

from grading_symbolic import symbolic_equiv

# -----------------------------------------------------------------------------
# constants

WORKER_START_TIMEOUT = 60.0  # seconds allowed for the sympy worker to start
WORKER_COMMAND = [sys.executable, os.path.abspath(__file__)]  # the sympy worker: this file's entry point

# -----------------------------------------------------------------------------
# the time-bounded worker process

_symbolic_cache = {}      # (pred_norm, gold_norm) -> bool, timeouts included
_SYMBOLIC_CACHE_SIZE = 20000
_workers = {}             # thread ident -> _Worker: this process's workers, one per thread
_workers_lock = threading.Lock()


def _read_line(fd, deadline):
    """One line from fd, or None if it does not arrive before `deadline` (time.monotonic)
    or the other end closed. select() so that a silent worker cannot block us."""
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
    return buf.decode("ascii", "replace").strip()


class _Worker:
    """One sympy worker: a separate interpreter running `command`, spoken to in JSON lines.
    Started with subprocess, not multiprocessing, so a daemonic process may start it."""

    def __init__(self, command):
        if not command or not command[0]:
            raise RuntimeError("grading_worker.py: no Python executable to start the sympy worker with")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        ready = _read_line(self.proc.stdout.fileno(), time.monotonic() + WORKER_START_TIMEOUT)
        if ready != "ready":
            self.kill()
            raise RuntimeError(f"grading_worker.py: the sympy worker {command} did not start (said {ready!r})")

    def alive(self):
        return self.proc.poll() is None

    def ask(self, pred_norm, gold_norm, timeout):
        """True / False, or None when it did not answer in time (or died)."""
        try:
            self.proc.stdin.write((json.dumps([pred_norm, gold_norm]) + "\n").encode("ascii"))
        except OSError:  # BrokenPipeError: it died
            return None
        reply = _read_line(self.proc.stdout.fileno(), time.monotonic() + timeout)
        return {"1": True, "0": False}.get(reply)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.forget()

    def forget(self):
        """Close our ends of the pipes without touching the process (a fork's inherited copy)."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _thread_worker(command):
    """This thread's live worker, started when missing; workers of finished threads are
    killed on the way (thread idents are reused, so a dead thread's worker is found)."""
    ident = threading.get_ident()
    with _workers_lock:
        worker = _workers.get(ident)
        if worker is not None and worker.alive():
            return worker
        alive = {t.ident for t in threading.enumerate()}
        for k in [k for k in _workers if k == ident or k not in alive]:
            _workers.pop(k).kill()
    worker = _Worker(command)  # outside the lock: starting takes ~1 s, other threads go on
    with _workers_lock:
        _workers[ident] = worker
    return worker


def stop_workers():
    """Kill this process's sympy workers (the next symbolic check starts a fresh one)."""
    with _workers_lock:
        workers = list(_workers.values())
        _workers.clear()
    for worker in workers:
        worker.kill()


def _forget_inherited_workers():
    """After fork, in the child: the parent's workers are the parent's. Drop them (closing
    only our copies of their pipes) and take a fresh lock, which another thread of the
    parent may have held at the moment of the fork."""
    global _workers_lock
    _workers_lock = threading.Lock()
    for worker in _workers.values():
        worker.forget()
    _workers.clear()


os.register_at_fork(after_in_child=_forget_inherited_workers)
atexit.register(stop_workers)


def symbolic_equiv_bounded(pred_norm, gold_norm, timeout, command=None):
    """symbolic_equiv(pred_norm, gold_norm) run in this thread's worker: True / False, and
    False when it takes more than `timeout` seconds (the worker is then killed). command:
    the worker to start when none is running (tests pass a stand-in)."""
    key = (pred_norm, gold_norm)
    if key in _symbolic_cache:
        return _symbolic_cache[key]
    worker = _thread_worker(command or WORKER_COMMAND)
    ok = worker.ask(pred_norm, gold_norm, timeout)
    if ok is None:  # too slow or crashed: kill it, the next call starts a fresh one
        with _workers_lock:
            if _workers.get(threading.get_ident()) is worker:
                del _workers[threading.get_ident()]
        worker.kill()
        ok = False
    if len(_symbolic_cache) >= _SYMBOLIC_CACHE_SIZE:
        _symbolic_cache.clear()
    _symbolic_cache[key] = ok
    return ok


def _watch_parent(parent_pid):
    """In the worker: exit as soon as the parent is gone, even in the middle of a check."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def _worker_main(stdin, stdout):
    """The worker's loop: one JSON [pred, gold] per line in, '1' or '0' per line out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it kills us
    import sympy  # noqa: F401  the one slow import, before "ready" (lazy: only the worker needs sympy)
    _watch_parent(os.getppid())
    stdout.write("ready\n")
    stdout.flush()
    for line in stdin:
        try:
            pred, gold = json.loads(line)
            ok = bool(symbolic_equiv(pred, gold))
        except Exception:  # model text: any failure means "not shown equal"
            ok = False
        stdout.write("1\n" if ok else "0\n")
        stdout.flush()


if __name__ == "__main__":
    _worker_main(sys.stdin, sys.stdout)
