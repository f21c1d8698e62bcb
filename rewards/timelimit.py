"""Hard time limits for verifier calls, valid in any thread and any process.

Why not ``signal.alarm`` (math-verify's default)? Python only handles signals in the main
thread, so off it math-verify's ``parse``/``verify`` raise ``ValueError`` (callers such as
open-r1 then score the answer 0), and with ``parsing_timeout=None`` there is no limit at all;
even in the main thread an alarm cannot interrupt a long C-level operation such as a huge
integer power (``2^{2^{2^{2^{2^{2}}}}}``).

Instead, the call runs in a reusable helper *process* (a plain ``subprocess`` running
:mod:`rewards._worker`; no ``multiprocessing`` start-method or ``__main__`` re-import issues).
The caller waits on the pipe with ``poll`` until the deadline; when it passes, the helper is
killed with SIGKILL (which always works) and a fresh one is started on the next call. Helpers
are pooled (one per concurrent caller, at most :data:`MAX_WORKERS` per process); a forked child
process never reuses its parent's helpers.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Any

MAX_WORKERS = 4
"""Most helper processes per calling process (one per concurrent caller)."""
STARTUP_TIMEOUT_S = 120.0
"""Limit for starting a helper or importing a module in it (never counted in a call's deadline)."""

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOT = f"import sys; sys.path.insert(0, {_ROOT!r}); from rewards._worker import main; main()"


class VerifierTimeout(TimeoutError):
    """A call ran past its deadline; its helper process was killed."""


class VerifierError(RuntimeError):
    """The called function raised inside the helper (message: ``"Type: text"``), or the
    helper died."""


class _HelperDied(VerifierError):
    """The helper process exited (crash, killed by the OS ...)."""


class VerifierStartError(RuntimeError):
    """A helper process could not be started, or could not import the module asked for: a
    setup problem, never a property of the input, so rewards let it propagate."""


class _Worker:
    """One helper process and the pipes to it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        )
        self.imported: set[str] = set()
        try:
            reply = self._read(time.monotonic() + STARTUP_TIMEOUT_S)
        except (VerifierTimeout, VerifierError) as e:
            reply = e
        if reply != ("ok", "ready"):
            self.kill()
            raise VerifierStartError(f"reward helper process ({sys.executable}) failed to start: {reply!r}")

    def ensure_imported(self, module: str) -> None:
        """Import ``module`` in the helper (no deadline but :data:`STARTUP_TIMEOUT_S`)."""
        if module in self.imported:
            return
        try:
            self.request(("import", module), STARTUP_TIMEOUT_S)
        except (VerifierTimeout, VerifierError) as e:
            raise VerifierStartError(f"reward helper process cannot import {module}: {e}") from e
        self.imported.add(module)

    def _read(self, deadline: float) -> Any:
        fd = self.proc.stdout.fileno()
        poller = select.poll()  # not select.select: it fails for descriptors >= 1024
        poller.register(fd, select.POLLIN)
        buf = bytearray()
        need = 4
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(1, int(left * 1000))):
                raise VerifierTimeout("deadline passed")
            chunk = os.read(fd, need - len(buf))
            if not chunk:
                raise _HelperDied(f"reward helper process died (exit code {self.proc.poll()})")
            buf += chunk
            if need == 4 and len(buf) >= 4:
                need = 4 + struct.unpack(">I", bytes(buf[:4]))[0]
        return pickle.loads(bytes(buf[4:need]))

    def request(self, message: tuple, timeout_s: float) -> Any:
        """Send one request; return the result or raise ``VerifierTimeout``/``VerifierError``."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise _HelperDied(f"reward helper process died: {e}") from e
        status, value = self._read(time.monotonic() + timeout_s)
        if status != "ok":
            raise VerifierError(value)
        return value

    def kill(self) -> None:
        """SIGKILL the helper, reap it and close the pipes."""
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - best effort
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_WORKERS)
        self.idle: list[_Worker] = []
        self.pid = os.getpid()

    def checkout(self) -> _Worker:
        """An idle helper, or a new one (blocks while MAX_WORKERS are busy)."""
        self.slots.acquire()
        with self.lock:
            if self.idle:
                return self.idle.pop()
        try:
            return _Worker()
        except BaseException:
            self.slots.release()
            raise

    def checkin(self, worker: _Worker | None) -> None:
        """Return a helper (``None``: it was killed) and free its slot."""
        with self.lock:
            if worker is not None:
                self.idle.append(worker)
        self.slots.release()

    def close(self) -> None:
        """Kill the idle helpers."""
        with self.lock:
            workers, self.idle = self.idle, []
        for w in workers:
            w.kill()


_pool = _Pool()


def _after_fork_in_child() -> None:
    # The child must not talk to (or kill) the parent's helpers, nor inherit a held lock; it
    # closes its copies of their pipes so that they still see end of input when the parent goes.
    global _pool
    inherited, _pool = _pool, _Pool()
    for w in inherited.idle:
        for f in (w.proc.stdin, w.proc.stdout):
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(lambda: _pool.close() if _pool.pid == os.getpid() else None)


def call(module: str, function: str, args: tuple, timeout_s: float) -> Any:
    """Run ``module.function(*args)`` in a helper process, bounded by ``timeout_s`` seconds.

    ``args`` and the result must be picklable. Importing ``module`` in a fresh helper happens
    before the deadline starts; waiting for a free helper (all :data:`MAX_WORKERS` busy) is not
    counted either.

    Args:
        module: importable module name, e.g. ``"rewards._math"``.
        function: function name in that module.
        args: positional arguments.
        timeout_s: the hard limit in seconds (> 0) for the call itself.

    Returns:
        The function's return value.

    Raises:
        ValueError: if ``timeout_s`` is not > 0.
        VerifierStartError: no helper could be started, or it cannot import ``module``.
        VerifierTimeout: the deadline passed (the helper was killed; the next call starts one).
        VerifierError: the function raised in the helper, or the helper died.
    """
    if not timeout_s or timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    pool = _pool
    worker = pool.checkout()
    try:
        worker.ensure_imported(module)
        result = worker.request(("call", module, function, args), timeout_s)
    except _HelperDied:
        worker.kill()
        pool.checkin(None)  # the next call starts a fresh helper
        raise
    except VerifierError:  # the function raised: the helper itself is fine
        pool.checkin(worker)
        raise
    except BaseException:  # timeout, KeyboardInterrupt ...: the helper's state is unknown
        worker.kill()
        pool.checkin(None)
        raise
    pool.checkin(worker)
    return result


def shutdown() -> None:
    """Stop this process's idle helper processes (they are also stopped at exit)."""
    _pool.close()
