import torch

from grpo.samplers import SamplingConfig, build_sampler
from grpo.samplers.decode import left_pad


def test_left_pad():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_hf_sampler_groups_and_flags(tiny_model, tokenizer):
    torch.manual_seed(0)
    sampler = build_sampler("hf", tiny_model, tokenizer, SamplingConfig(max_completion_length=6, temperature=1.0))
    prompts = [tokenizer("hello there")["input_ids"], tokenizer("2+2=")["input_ids"]]
    rollout = sampler.generate(prompts, num_generations=3)
    n, t = rollout.completion_ids.shape
    assert n == 6 and t <= 6 and len(rollout.completions) == 6
    # rows 0-2 share prompt 0, rows 3-5 prompt 1, left-padded
    for row in range(6):
        real = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()].tolist()
        assert real == prompts[row // 3]
    lengths = rollout.completion_mask.sum(1)
    assert torch.equal(rollout.truncated, lengths == 6)  # random tiny model: EOS is rare, lengths hit the cap
    assert rollout.completions[0] == tokenizer.decode(
        rollout.completion_ids[0][rollout.completion_mask[0].bool()], skip_special_tokens=True
    )


def test_greedy_is_deterministic_and_model_defaults_do_not_leak(tiny_model, tokenizer):
    tiny_model.generation_config.top_k = 1  # must be ignored: only SamplingConfig decides how to sample
    try:
        sampler = build_sampler("hf", tiny_model, tokenizer, SamplingConfig(max_completion_length=5, temperature=1.0))
        torch.manual_seed(0)
        texts = sampler.generate([tokenizer("abc")["input_ids"]], 8).completions
        assert len(set(texts)) > 1  # with the model's top_k=1 every completion would be the greedy one
    finally:
        tiny_model.generation_config.top_k = None
    greedy = build_sampler("hf", tiny_model, tokenizer, SamplingConfig(max_completion_length=5, temperature=0.0))
    prompt = [tokenizer("abc")["input_ids"]]
    assert greedy.generate(prompt, 2).completions[0] == greedy.generate(prompt, 2).completions[1]


def test_unknown_sampler():
    import pytest

    with pytest.raises(ValueError, match="unknown sampler"):
        build_sampler("nope", None, None, SamplingConfig(4))


def test_build_run_sampler_takes_sampling_and_engine_settings_from_the_run(monkeypatch):
    import grpo.samplers.base as base
    from grpo.config import GRPOArguments, VLLMArguments
    from grpo.samplers import build_run_sampler

    calls = []
    monkeypatch.setattr(base, "build_sampler", lambda *a: calls.append(a) or "sampler")
    args = GRPOArguments(sampler="vllm", max_completion_length=7, temperature=0.5, top_p=0.9, top_k=3, seed=11)
    vllm_args = VLLMArguments(vllm_kv_cache_gb=2.0)
    assert build_run_sampler("model", "tokenizer", args, vllm_args) == "sampler"
    ((name, model, tokenizer, config, engine_args, seed),) = calls
    assert (name, model, tokenizer, engine_args, seed) == ("vllm", "model", "tokenizer", vllm_args, 11)
    assert (config.max_completion_length, config.temperature, config.top_p, config.top_k) == (7, 0.5, 0.9, 3)
