"""A stand-in for a vLLM server, for failure tests that need no vllm: an HTTP server on a free port in a
thread, answering the routes ``VLLMServerSampler`` uses with fixed completions; it can be told to never answer
the n-th weight reload (``hang_reload_from``), and it can be stopped mid-run (``close``) like a dead server.
Always closed by its fixture (``with FakeVLLMServer(...) as fake``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeVLLMServer:
    """Completions are ``completion_ids`` for every prompt (log-prob -1 per token, finished at its last token).

    Args:
        completion_ids: the tokens of every completion.
        hang_reload_from: the ``/collective_rpc`` calls from this one on (1 = the first) never answer while
            the server runs (None: all answer).
    """

    def __init__(self, completion_ids: list[int], hang_reload_from: int | None = None):
        self.completion_ids, self.hang_reload_from = completion_ids, hang_reload_from
        self.logprobs_mode = "processed_logprobs"
        self.reloads, self.released = 0, threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop answering (connections are refused from now on) and release hung requests."""
        self.released.set()
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self) -> FakeVLLMServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def answer(self, method: str, path: str, body: dict) -> dict | None:
        path = path.split("?")[0]
        if path == "/health":
            return {}
        if path == "/v1/models":
            return {"data": [{"id": "fake-model"}]}
        if path == "/server_info":
            config = {"logprobs_mode": self.logprobs_mode, "dtype": "torch.float32"}
            return {"vllm_config": {"model_config": config, "lora_config": None, "weight_transfer_config": None}}
        if path in ("/pause", "/resume"):
            return {"status": "ok"}
        if path == "/collective_rpc":
            self.reloads += 1
            if self.hang_reload_from is not None and self.reloads >= self.hang_reload_from:
                self.released.wait()
            return {"results": [None]}
        if path == "/v1/completions":
            ids = self.completion_ids
            choices = [
                {
                    "index": i * body.get("n", 1) + j,
                    "token_ids": ids,
                    "prompt_token_ids": prompt,
                    "logprobs": {"token_logprobs": [-1.0] * len(ids)},
                    "finish_reason": "stop",
                }
                for i, prompt in enumerate(body["prompt"])
                for j in range(body.get("n", 1))
            ]
            return {"choices": choices}
        return None


def _handler(fake: FakeVLLMServer):
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            answer = fake.answer(method, self.path, body)
            data = json.dumps(answer if answer is not None else {"error": "not found"}).encode()
            self.send_response(200 if answer is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's names)
            self._reply("GET")

        def do_POST(self):  # noqa: N802
            self._reply("POST")

        def log_message(self, *args):
            pass

    return Handler
