"""Samplers: generate G completions per prompt and take new policy weights."""

from grpo.samplers.base import Sampler, SamplingConfig, build_run_sampler, build_sampler, resolve_sampler_name

__all__ = ["Sampler", "SamplingConfig", "build_run_sampler", "build_sampler", "resolve_sampler_name"]
