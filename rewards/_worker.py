"""Body of the helper process that runs verifier calls for :mod:`rewards.timelimit`.

Started as ``python -c "... from rewards._worker import main; main()"``. Protocol on its stdin/stdout:
frames of a 4-byte big-endian length followed by a pickle. First it sends ``("ok", "ready")``; then:

* request ``("import", module)`` → ``("ok", None)``: import ahead of time, so that an item's limit
  never includes import time;
* request ``("call", module, function, args, timeout_s)`` → ``("ok", result)``, ``("err", "Type: msg")``
  or ``("timeout", None)`` when the call ran past ``timeout_s`` seconds (stopped by this process's own
  alarm, so the helper lives on; a call stuck in C ignores it and the parent kills the helper).

It exits on end of input (its parent closed the pipe or died).
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import resource
import signal
import struct
import sys

MEMORY_LIMIT_BYTES = 4 << 30  # address-space cap: a runaway expression gets MemoryError, not the OOM killer


class _Alarm(BaseException):
    """Raised by the alarm; a BaseException, so that libraries' ``except Exception`` let it through."""


_armed = False


def _on_alarm(signum, frame) -> None:
    if _armed:
        raise _Alarm


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _write_frame(fd: int, obj) -> None:
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # an unpicklable result
        data = pickle.dumps(("err", f"{type(e).__name__}: {e}"))
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _call(module: str, function: str, args: tuple, timeout_s: float):
    global _armed
    func = getattr(importlib.import_module(module), function)
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return func(*args)
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def _handle(request) -> tuple:
    op = request[0]
    if op == "import":
        importlib.import_module(request[1])
        return ("ok", None)
    if op == "call":
        return ("ok", _call(*request[1:]))
    return ("err", f"ValueError: unknown request {op!r}")


def main() -> None:
    """Serve requests until end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which kills us
    signal.signal(signal.SIGALRM, _on_alarm)
    logging.disable(logging.WARNING)  # math-verify logs a warning per disabled timeout
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ValueError, OSError):
        pass
    # Keep the protocol on a private descriptor; anything a library prints goes to stderr.
    fd_in = os.dup(0)
    fd_out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _write_frame(fd_out, ("ok", "ready"))
    while True:
        header = _read_exact(fd_in, 4)
        if header is None:
            return
        payload = _read_exact(fd_in, struct.unpack(">I", header)[0])
        if payload is None:
            return
        try:
            reply = _handle(pickle.loads(payload))
        except _Alarm:
            reply = ("timeout", None)
        except BaseException as e:  # noqa: BLE001 - report everything, keep serving
            reply = ("err", f"{type(e).__name__}: {e}"[:2000])
        _write_frame(fd_out, reply)


if __name__ == "__main__":
    main()
