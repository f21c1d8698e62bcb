"""HTTP client of a vLLM server: JSON requests with a connection timeout, a request timeout and retries.

Every failure becomes a :class:`ServerError` whose message names the server (``host:port``), what was being
done and why it failed, so that a dead or stuck server ends the run with a readable error instead of a hang:

- connection refused or reset, or a connection attempt slower than ``connect_timeout``: the request is sent
  again up to ``retries`` times, ``retry_wait`` seconds apart, then fails ("unreachable ... did it die?");
- no answer within the request's timeout (``ServerTimeout``, a ``ServerError``): fails at once, never retried,
  so a call is bounded by its timeout;
- an HTTP error status: fails with the server's own error text.

Only the standard library is used (``http.client``), one connection per request, so a client may be shared by
threads (a background rollout thread and the training thread).
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any


class ServerError(RuntimeError):
    """The vLLM server failed, died, or did not answer (the message names ``host:port``)."""


class ServerTimeout(ServerError):
    """The vLLM server did not answer within the timeout (the message names ``host:port`` and what timed out)."""


class ServerClient:
    """JSON over HTTP to ``http://host:port``.

    Args:
        host, port: the server.
        connect_timeout: seconds one TCP connection attempt may take.
        retries: times a request is sent again after a connection failure.
        retry_wait: seconds between attempts.
    """

    def __init__(self, host: str, port: int, connect_timeout: float = 10.0, retries: int = 2, retry_wait: float = 2.0):
        self.host, self.port = host, port
        self.connect_timeout, self.retries, self.retry_wait = connect_timeout, retries, retry_wait

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def request(self, method: str, path: str, body: Any = None, *, timeout: float, what: str) -> Any:
        """Send ``body`` (JSON) to ``path``; returns the decoded JSON answer (the text when it is not JSON, None
        when empty).

        Args:
            method: ``GET`` or ``POST``.
            path: e.g. ``/v1/completions`` (may carry a query string).
            timeout: seconds to wait for the answer once connected.
            what: what the request does, for error messages ("generation", "weight sync: reload").
        Raises:
            ServerTimeout: no answer within ``timeout`` seconds.
            ServerError: unreachable after the retries, or an HTTP error status.
        """
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_wait)
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
            try:
                try:
                    conn.connect()
                except OSError as err:  # refused, unreachable, or connect timeout: worth another try
                    error = err
                    continue
                conn.sock.settimeout(timeout)
                try:
                    status, data = self._exchange(conn, method, path, body)
                except TimeoutError as err:
                    raise ServerTimeout(
                        f"vLLM server at {self.address}: {what} got no answer within {timeout:g} s ({method} {path}); "
                        f"the server is stuck or overloaded (see its log), or raise the timeout"
                    ) from err
                except (ConnectionError, http.client.HTTPException) as err:  # dropped mid-request: the server died?
                    error = err
                    continue
            finally:
                conn.close()
            return self._answer(status, data, method, path, what)
        raise ServerError(
            f"vLLM server at {self.address} is unreachable: {what} failed after {self.retries + 1} attempt(s) "
            f"({type(error).__name__}: {error}); did the server die? See its log, or start it with `grpo serve`"
        ) from error

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, method: str, path: str, body: Any) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def _answer(self, status: int, data: bytes, method: str, path: str, what: str) -> Any:
        text = data.decode(errors="replace")
        if status >= 400:
            raise ServerError(
                f"vLLM server at {self.address}: {what} failed ({method} {path}: HTTP {status}): {text[:800]}"
            )
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def get(self, path: str, *, timeout: float, what: str) -> Any:
        return self.request("GET", path, timeout=timeout, what=what)

    def post(self, path: str, body: Any = None, *, timeout: float, what: str) -> Any:
        return self.request("POST", path, body if body is not None else {}, timeout=timeout, what=what)

    def wait_until_healthy(self, timeout: float, poll: float = 1.0) -> float:
        """Poll ``GET /health`` until it answers 200; returns the seconds waited.

        Raises ``ServerError`` when nothing healthy answers within ``timeout`` seconds."""
        start = time.monotonic()
        while True:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=min(self.connect_timeout, timeout))
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return time.monotonic() - start
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            if time.monotonic() - start > timeout:
                raise ServerError(
                    f"no vLLM server answered GET /health at {self.address} within {timeout:g} s "
                    f"(vllm_server_startup_timeout); start one with `grpo serve MODEL --port {self.port}`"
                )
            time.sleep(poll)
