"""Bounded-time verifier calls for a whole batch, valid in any thread and any process.

Why not ``signal.alarm`` in the caller (math-verify's default)? Python only handles signals in the main
thread, so off it math-verify's ``parse``/``verify`` raise ``ValueError`` (callers such as open-r1 then
score the answer 0), and even in the main thread an alarm cannot interrupt a long C-level operation
such as a huge integer power (``2^{2^{2^{2^{2^{2}}}}}``).

Instead, calls run in helper *processes* (plain ``subprocess`` children running
:mod:`rewards._worker`; no ``multiprocessing`` start-method or ``__main__`` re-import issues), which
:func:`run_batch` feeds one item at a time, shortest first, from a pool of up to :data:`MAX_WORKERS`:

* per item, the helper's own alarm stops a slow Python-level call after ``timeout_s`` (the helper
  lives on); a call that does not answer ``GRACE_S`` later (stuck in C) gets its helper SIGKILLed
  (which always works) and a fresh helper takes over;
* per batch, a deadline ``batch_timeout_s`` after the first helper is ready: items not finished by then
  are given up (their helpers killed) and reported as timeouts, so a batch never takes much longer
  than its deadline, whatever the items are;
* every timeout is counted in the caller's :func:`count_timeouts` block.

Starting a helper (a Python process importing SymPy: about a second) is not counted in the first
item's limit nor, for the first helper of a batch, in the batch deadline. Helpers are kept between
batches; a forked child process never reuses its parent's helpers.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import math
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Most helper processes per calling process (shared by all its threads)."""
ITEMS_PER_WORKER = 8
"""A batch uses one more helper (up to :data:`MAX_WORKERS`) per this many items."""
STARTUP_TIMEOUT_S = 120.0
"""Limit for starting a helper or importing a module in it (a setup problem when passed)."""
GRACE_S = 0.5
"""Seconds past an item's limit before its helper, which did not answer its own alarm, is killed."""

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOT = f"import sys; sys.path.insert(0, {_ROOT!r}); from rewards._worker import main; main()"


class VerifierTimeout(TimeoutError):
    """A call ran past its limit (:func:`call`)."""


class VerifierError(RuntimeError):
    """The called function raised inside the helper (message: ``"Type: text"``), or the helper died."""


class VerifierStartError(RuntimeError):
    """A helper process could not be started, or could not import the module asked for: a setup
    problem, never a property of the input, so rewards let it propagate."""


class TimeoutCount:
    """The number of items given up for time inside a :func:`count_timeouts` block."""

    def __init__(self) -> None:
        self.timeouts = 0


_counter: contextvars.ContextVar[TimeoutCount | None] = contextvars.ContextVar("reward_timeouts", default=None)


@contextlib.contextmanager
def count_timeouts() -> Iterator[TimeoutCount]:
    """Count the timeouts of the :func:`run_batch` calls made inside the block, in this thread (and
    context): ``with count_timeouts() as c: reward(...)``, then ``c.timeouts``."""
    count = TimeoutCount()
    token = _counter.set(count)
    try:
        yield count
    finally:
        _counter.reset(token)


class _Worker:
    """One helper process, the pipes to it and where it stands: ``starting`` (no ready frame yet),
    ``importing``, ``idle`` or ``busy`` (one item in flight until ``hard_deadline``)."""

    def __init__(self) -> None:
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
            )
        except OSError as e:
            raise VerifierStartError(f"reward helper process ({sys.executable}) failed to start: {e}") from e
        self.fd = self.proc.stdout.fileno()
        self.state = "starting"
        self.since = time.monotonic()
        self.imported: set[str] = set()
        self.importing: str | None = None
        self.item: int | None = None
        self.hard_deadline = math.inf

    def send(self, message: tuple) -> None:
        """Write one request frame; raises ``OSError`` when the helper is gone."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(struct.pack(">I", len(data)) + data)
        self.proc.stdin.flush()

    def read(self, deadline: float) -> Any:
        """Read one reply frame. Raises ``TimeoutError`` when ``deadline`` passes first and ``EOFError``
        when the helper is gone."""
        poller = select.poll()  # not select.select: it fails for descriptors >= 1024
        poller.register(self.fd, select.POLLIN)
        buf, need = bytearray(), 4
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(1, int(left * 1000))):
                raise TimeoutError
            chunk = os.read(self.fd, need - len(buf))
            if not chunk:
                raise EOFError(f"reward helper process died (exit code {self.proc.poll()})")
            buf += chunk
            if need == 4 and len(buf) >= 4:
                need = 4 + struct.unpack(">I", bytes(buf[:4]))[0]
        return pickle.loads(bytes(buf[4:need]))

    def kill(self) -> None:
        """SIGKILL the helper, reap it and close the pipes."""
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - best effort
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                f.close()


class _Pool:
    """The helpers of this process: those not in a batch wait in ``idle`` (in any state but busy)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.alive = 0
        self.pid = os.getpid()

    def checkout(self, want: int) -> list[_Worker]:
        """Up to ``want`` helpers (at least one; blocks while other threads hold all of them)."""
        with self.cond:
            while not self.idle and self.alive >= MAX_WORKERS:
                self.cond.wait()
            cut = max(0, len(self.idle) - want)  # the most recently used first
            taken, self.idle = self.idle[cut:][::-1], self.idle[:cut]
            create = min(want - len(taken), MAX_WORKERS - self.alive)
            self.alive += create
        try:
            return taken + [_Worker() for _ in range(create)]
        except BaseException:
            self.checkin(taken, dead=create)
            raise

    def checkin(self, workers: list[_Worker], dead: int = 0) -> None:
        """Return live helpers; ``dead`` helpers of the batch were killed and not replaced."""
        with self.cond:
            self.idle.extend(workers)
            self.alive -= dead
            self.cond.notify_all()

    def close(self) -> None:
        """Kill the idle helpers."""
        with self.cond:
            workers, self.idle = self.idle, []
            self.alive -= len(workers)
        for w in workers:
            w.kill()


_pool = _Pool()


def _after_fork_in_child() -> None:
    # The child must not talk to (or kill) the parent's helpers, nor inherit a held lock; it closes
    # its copies of their pipes so that they still see end of input when the parent goes.
    global _pool
    inherited, _pool = _pool, _Pool()
    for w in inherited.idle:
        for f in (w.proc.stdin, w.proc.stdout):
            with contextlib.suppress(Exception):
                f.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(lambda: _pool.close() if _pool.pid == os.getpid() else None)


def _size(args: tuple) -> int:
    return sum(len(a) for a in args if isinstance(a, str))


class _Batch:
    """One :func:`run_batch` call: feeds items to its helpers until done or past the deadline."""

    def __init__(self, module: str, function: str, args_list: Sequence[tuple], timeout_s: float, batch_s: float):
        self.module, self.function, self.args = module, function, args_list
        self.timeout_s, self.batch_s = timeout_s, batch_s
        self.outcomes: list[tuple[str, Any] | None] = [None] * len(args_list)
        self.pending = deque(sorted(range(len(args_list)), key=lambda i: _size(args_list[i])))
        self.deadline = math.inf  # starts when the first helper is ready
        self.workers: list[_Worker] = []
        self.dead = 0

    def run(self, workers: list[_Worker]) -> list[tuple[str, Any]]:
        self.workers = workers
        try:
            while self.pending or any(w.state == "busy" for w in self.workers):
                now = time.monotonic()
                if self.deadline == math.inf and any(self.module in w.imported for w in self.workers):
                    self.deadline = now + self.batch_s
                if now >= self.deadline:
                    break
                for w in list(self.workers):
                    self._advance(w, now)
                self._wait()
        finally:
            self._give_up()
        return self.outcomes  # type: ignore[return-value]

    def _advance(self, w: _Worker, now: float) -> None:
        """Start the import or the next item on an idle helper; fail a helper stuck starting."""
        if w.state in ("starting", "importing"):
            if now - w.since > STARTUP_TIMEOUT_S:
                self._replace(w, start_failed=f"did not start within {STARTUP_TIMEOUT_S:.0f}s")
            return
        if w.state != "idle" or not self.pending:
            return
        try:
            if self.module not in w.imported:
                w.send(("import", self.module))
                w.state, w.since, w.importing = "importing", now, self.module
                return
            i = self.pending.popleft()
            w.item, w.state, w.hard_deadline = i, "busy", now + self.timeout_s + GRACE_S
            w.send(("call", self.module, self.function, self.args[i], self.timeout_s))
        except OSError:
            if w.item is not None and w.state == "busy":
                self.pending.appendleft(w.item)
            self._replace(w)

    def _wait(self) -> None:
        """Wait for a reply or the next deadline, then handle what arrived and what ran out."""
        waiting = [w for w in self.workers if w.state != "idle"]
        if not waiting:
            return
        wake = min([self.deadline, *(w.hard_deadline for w in waiting if w.state == "busy")])
        wake = min(wake, *(w.since + STARTUP_TIMEOUT_S for w in waiting if w.state != "busy"), math.inf)
        poller = select.poll()
        by_fd = {w.fd: w for w in waiting}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        left = max(0.0, min(wake, time.monotonic() + 60) - time.monotonic())
        for fd, _ in poller.poll(max(1, int(left * 1000))):
            self._receive(by_fd[fd])
        now = time.monotonic()
        for w in [w for w in self.workers if w.state == "busy" and now >= w.hard_deadline]:
            self._finish(w, ("timeout", None))  # stuck in C: its alarm did not work
            self._replace(w)

    def _receive(self, w: _Worker) -> None:
        try:
            status, value = w.read(max(w.hard_deadline if w.state == "busy" else 0, time.monotonic() + 5))
        except (EOFError, TimeoutError, pickle.UnpicklingError) as e:
            if w.state == "busy":
                self._finish(w, ("error", f"reward helper process died: {e}"))
                self._replace(w)
            else:
                self._replace(w, start_failed=f"died while starting: {e}")
            return
        if w.state == "starting" or w.state == "importing":
            if status != "ok":
                w.kill()
                self.workers.remove(w)
                self.dead += 1
                raise VerifierStartError(f"reward helper process cannot import {self.module}: {value}")
            if w.state == "importing":
                w.imported.add(w.importing)
            w.state = "idle"
            return
        self._finish(w, {"ok": ("ok", value), "timeout": ("timeout", None)}.get(status, ("error", value)))

    def _finish(self, w: _Worker, outcome: tuple[str, Any]) -> None:
        self.outcomes[w.item] = outcome
        w.item, w.state, w.hard_deadline = None, "idle", math.inf

    def _replace(self, w: _Worker, start_failed: str | None = None) -> None:
        """Kill ``w``; start a new helper in its place while items remain."""
        w.kill()
        self.workers.remove(w)
        if start_failed is not None and not self.workers:
            self.dead += 1
            raise VerifierStartError(f"reward helper process ({sys.executable}) {start_failed}")
        if self.pending and start_failed is None:
            self.workers.append(_Worker())
        else:
            self.dead += 1

    def _give_up(self) -> None:
        """Past the deadline (or on error): busy items and unsent ones are timeouts; helpers go back."""
        for w in [w for w in self.workers if w.state == "busy"]:
            self._finish(w, ("timeout", None))
            w.kill()
            self.workers.remove(w)
            self.dead += 1
        for i in self.pending:
            self.outcomes[i] = ("timeout", None)
        self.pending.clear()
        _pool.checkin(self.workers, dead=self.dead)
        self.workers = []
        count = _counter.get()
        if count is not None:
            count.timeouts += sum(1 for o in self.outcomes if o is not None and o[0] == "timeout")


def run_batch(
    module: str, function: str, args_list: Sequence[tuple], *, timeout_s: float, batch_timeout_s: float
) -> list[tuple[str, Any]]:
    """Run ``module.function(*args)`` for every ``args`` of ``args_list`` in helper processes, each call
    bounded by ``timeout_s`` seconds and the whole batch by ``batch_timeout_s`` seconds (from the moment
    the first helper is ready). ``args`` and results must be picklable.

    Returns:
        One outcome per item, in order: ``("ok", result)``, ``("timeout", None)`` (past either limit;
        counted in :func:`count_timeouts`) or ``("error", "Type: message")`` (the call raised, or its
        helper died).

    Raises:
        ValueError: a limit that is not > 0.
        VerifierStartError: no helper could be started, or it cannot import ``module``.
    """
    if not timeout_s or timeout_s <= 0 or not batch_timeout_s or batch_timeout_s <= 0:
        raise ValueError(f"timeouts must be > 0, got timeout_s={timeout_s!r}, batch_timeout_s={batch_timeout_s!r}")
    if not args_list:
        return []
    want = min(MAX_WORKERS, math.ceil(len(args_list) / ITEMS_PER_WORKER))
    return _Batch(module, function, args_list, timeout_s, batch_timeout_s).run(_pool.checkout(want))


def call(module: str, function: str, args: tuple, timeout_s: float) -> Any:
    """One call of ``module.function(*args)`` in a helper process, bounded by ``timeout_s`` seconds.

    Raises:
        ValueError: if ``timeout_s`` is not > 0.
        VerifierStartError: no helper could be started, or it cannot import ``module``.
        VerifierTimeout: the limit passed.
        VerifierError: the function raised in the helper, or the helper died.
    """
    ((status, value),) = run_batch(module, function, [args], timeout_s=timeout_s, batch_timeout_s=timeout_s + GRACE_S)
    if status == "timeout":
        raise VerifierTimeout(f"{module}.{function} ran past {timeout_s:.3g}s")
    if status == "error":
        raise VerifierError(value)
    return value
