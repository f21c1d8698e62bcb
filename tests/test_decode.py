"""grpo.samplers.decode: one prefill per prompt, own decoding loop, finished rows dropped.

The checks: greedy equals transformers' generate row by row; the returned sampler log-probs equal the
loss's log-probs (we sample from the distribution the loss assumes); the warpers equal transformers';
the categorical draw has the right distribution; finished rows are padded and masked; groups are
consecutive rows.
"""

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from grpo.logprobs import completion_logprobs
from grpo.samplers.base import SamplingConfig
from grpo.samplers.decode import categorical, default_eos_ids, left_pad, sample_groups, top_k_filter, top_p_filter

TEXTS = ["hello there, how are you today, my friend?", "2+2=", "The quick brown fox jumps"]  # different lengths


@pytest.fixture(scope="module")
def prompts(tokenizer):
    ids = [tokenizer(t)["input_ids"] for t in TEXTS]
    assert len({len(p) for p in ids}) == len(ids)
    return ids


def completion_mask_from_eos(completion_ids, eos_ids):
    """Reference post-processing of generate's output: mask ``[N, T]`` 1 up to and including the first EOS,
    and truncated flags ``[N]`` (no EOS)."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids))  # [N, T]
    has_eos = is_eos.any(dim=1)  # [N]
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), completion_ids.shape[1])  # [N]
    mask = (torch.arange(completion_ids.shape[1])[None, :] <= first[:, None]).long()  # [N, T]
    return mask, ~has_eos


def test_reference_mask_includes_first_eos_only():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    mask, truncated = completion_mask_from_eos(ids, eos_ids=[2])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def generate_reference(model, tokenizer, prompts, g, max_new_tokens, eos_ids):
    """transformers' greedy generate on the B*G repeated prompts, post-processed like HFSampler."""
    ids, mask = left_pad([p for p in prompts for _ in range(g)], tokenizer.pad_token_id)
    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id
    )
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, ids.shape[1] :]
    cmask, truncated = completion_mask_from_eos(out, eos_ids)
    return out.masked_fill(cmask == 0, tokenizer.pad_token_id), cmask, truncated


def early_eos(model, tokenizer, prompts):
    """EOS ids that make the greedy rows of the prompts stop at different steps (the random model never
    samples the real EOS): the greedy token at step 2 of prompt 0 and at step 5 of prompt 2."""
    eos = default_eos_ids(model, tokenizer)
    free, _, _ = generate_reference(model, tokenizer, prompts, 1, 8, eos)
    return sorted({*eos, int(free[0, 2]), int(free[2, 5])})


@pytest.mark.parametrize("drop_finished", [True, False])
def test_greedy_equals_generate_row_by_row(tiny_model, tokenizer, prompts, drop_finished, monkeypatch):
    import grpo.samplers.decode as decode

    eos = early_eos(tiny_model, tokenizer, prompts)
    g, t = 2, 12
    want_ids, want_mask, want_truncated = generate_reference(tiny_model, tokenizer, prompts, g, t, eos)
    trims = []
    trim_left = decode._trim_left
    monkeypatch.setattr(decode, "_trim_left", lambda cache, mask: trims.append(trim_left(cache, mask)) or trims[-1])
    got = sample_groups(
        tiny_model, prompts, g, SamplingConfig(t, temperature=0.0), tokenizer, eos, drop_finished=drop_finished
    )
    if drop_finished:  # the longest prompt's rows ended first: its padding columns left the cache
        assert any(m.shape[1] < max(map(len, prompts)) + t for m in trims) and len(trims) >= 1
    assert got.completion_ids.shape == want_ids.shape
    for row in range(len(prompts) * g):
        assert got.completion_ids[row].tolist() == want_ids[row].tolist(), row
    assert torch.equal(got.completion_mask, want_mask) and torch.equal(got.truncated, want_truncated)
    lengths = got.completion_mask.sum(1).tolist()
    assert min(lengths) < t and max(lengths) == t, lengths  # rows finished early and rows run to the end
    # each row alone, unpadded, gives the same tokens
    for b, p in enumerate(prompts):
        alone, _, _ = generate_reference(tiny_model, tokenizer, [p], 1, t, eos)
        n = int(got.completion_mask[b * g].sum())
        assert got.completion_ids[b * g, :n].tolist() == alone[0, :n].tolist()


def test_sampler_logprobs_equal_the_loss_logprobs(tiny_model, tokenizer, prompts):
    torch.manual_seed(0)
    eos = sorted(set(torch.randint(3, len(tokenizer), (3000,)).tolist()) | {tokenizer.eos_token_id})  # ~6% per step
    config = SamplingConfig(16, temperature=0.7, top_p=0.95, top_k=200)
    rollout = sample_groups(tiny_model, prompts, 4, config, tokenizer, eos)
    lengths = rollout.completion_mask.sum(1)
    assert lengths.min() < 16 and bool(rollout.truncated.any())  # rows finished early and rows truncated
    with torch.no_grad():
        want, _ = completion_logprobs(
            tiny_model,
            rollout.prompt_ids,
            rollout.prompt_mask,
            rollout.completion_ids,
            rollout.completion_mask,
            temperature=0.7,
        )
    mask = rollout.completion_mask.bool()
    torch.testing.assert_close(rollout.sampler_logprobs[mask], want[mask], atol=1e-5, rtol=0)
    assert (rollout.sampler_logprobs[~mask] == 0).all()


def test_top_k_one_equals_greedy(tiny_model, tokenizer, prompts):
    greedy = sample_groups(tiny_model, prompts, 2, SamplingConfig(10, temperature=0.0), tokenizer)
    top1 = sample_groups(tiny_model, prompts, 2, SamplingConfig(10, temperature=1.0, top_k=1), tokenizer)
    assert torch.equal(greedy.completion_ids, top1.completion_ids)
    assert (top1.sampler_logprobs < 0).all()  # log-prob under the full distribution, not the filtered one


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.999])
def test_top_p_equals_transformers_warper(top_p):
    torch.manual_seed(1)
    scores = torch.randn(6, 500) * 3
    scores[0, :10] = 5.0  # ties at the top
    want = TopPLogitsWarper(top_p)(None, scores.clone())
    torch.testing.assert_close(top_p_filter(scores, top_p), want, rtol=0, atol=0)
    assert torch.equal(top_p_filter(scores, 1.0), scores)


@pytest.mark.parametrize("top_k", [1, 5, 499])
def test_top_k_equals_transformers_warper(top_k):
    torch.manual_seed(2)
    scores = torch.randn(4, 500)
    scores[1, :3] = 9.0  # ties
    torch.testing.assert_close(
        top_k_filter(scores, top_k), TopKLogitsWarper(top_k)(None, scores.clone()), rtol=0, atol=0
    )
    assert torch.equal(top_k_filter(scores, 0), scores)


def test_categorical_draws_the_right_distribution():
    gen = torch.Generator().manual_seed(3)
    v = 700  # not a multiple of the block size
    weights = torch.rand(v, generator=gen) ** 4
    weights[::7] = 0.0  # never drawn
    weights[-1] = 0.0
    n = 200_000
    draws = categorical(weights.expand(n, v).contiguous(), gen, block=64)
    counts = torch.bincount(draws, minlength=v).double()
    assert counts[weights == 0].sum() == 0
    expected = n * weights.double() / weights.double().sum()
    chi2 = float(((counts - expected)[weights > 0] ** 2 / expected[weights > 0]).sum())
    dof = int((weights > 0).sum()) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5  # about 5 sigma
    one_hot = torch.zeros(3, v)
    one_hot[0, 0] = one_hot[1, 345] = one_hot[2, v - 2] = 1.0
    assert categorical(one_hot, gen, block=64).tolist() == [0, 345, v - 2]


def test_finished_rows_are_padded_and_masked_and_groups_are_consecutive(tiny_model, tokenizer, prompts):
    torch.manual_seed(4)
    eos = sorted(set(torch.randint(3, len(tokenizer), (1500,)).tolist()))  # ~3% per step
    g = 3
    rollout = sample_groups(tiny_model, prompts, g, SamplingConfig(16, temperature=1.0), tokenizer, eos)
    pad = tokenizer.pad_token_id
    n, t = rollout.completion_ids.shape
    assert n == len(prompts) * g and len(rollout.completions) == n and rollout.prompt_ids.shape[0] == n
    is_eos = torch.isin(rollout.completion_ids, torch.tensor(eos))
    for row in range(n):
        real = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()].tolist()
        assert real == prompts[row // g]  # the G completions of a prompt are consecutive rows
        assert rollout.prompt_mask[row, : rollout.prompt_ids.shape[1] - len(real)].sum() == 0  # left padding
        length = int(rollout.completion_mask[row].sum())
        assert rollout.completion_mask[row, :length].all() and not rollout.completion_mask[row, length:].any()
        assert (rollout.completion_ids[row, length:] == pad).all()
        if rollout.truncated[row]:
            assert length == t and not is_eos[row].any()
        else:
            assert is_eos[row, length - 1] and not is_eos[row, : length - 1].any()  # ends at its first EOS
        ids = rollout.completion_ids[row][rollout.completion_mask[row].bool()]
        assert rollout.completions[row] == tokenizer.decode(ids, skip_special_tokens=True)
    assert (~rollout.truncated).sum() >= 2 and rollout.truncated.any()


def test_lora_model_and_training_mode_restored(tiny_model, tokenizer, prompts):
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        copy.deepcopy(tiny_model), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-trivial adapter
    model.train()
    eos = default_eos_ids(model, tokenizer)
    want_ids, _, _ = generate_reference(model, tokenizer, prompts, 2, 8, eos)
    model.train()
    got = sample_groups(model, prompts, 2, SamplingConfig(8, temperature=0.0), tokenizer)
    assert model.training
    assert torch.equal(got.completion_ids, want_ids)


@pytest.mark.skipif("stop" not in SamplingConfig.__dataclass_fields__, reason="SamplingConfig has no stop strings")
def test_stop_strings_end_rows_at_the_completing_token(tiny_model, tokenizer, prompts):
    """A row ends at the first token whose decoded completion (not the prompt) contains a stop string;
    greedy, so each stopped row is a prefix of the free-running one."""
    g, t = 2, 12
    free = sample_groups(tiny_model, prompts, g, SamplingConfig(t, temperature=0.0), tokenizer)
    text = free.completions[2 * g]
    stop = (text[len(text) // 2 : len(text) // 2 + 2], "</answer>")  # produced part-way through by prompt 2
    got = sample_groups(tiny_model, prompts, g, SamplingConfig(t, temperature=0.0, stop=stop), tokenizer)
    for row in range(len(prompts) * g):
        ids = free.completion_ids[row].tolist()
        ends = [
            j for j in range(1, t + 1) if any(s in tokenizer.decode(ids[:j], skip_special_tokens=True) for s in stop)
        ]
        length = ends[0] if ends else t
        assert int(got.completion_mask[row].sum()) == length, row
        assert got.completion_ids[row, :length].tolist() == ids[:length]
        assert bool(got.truncated[row]) == (not ends)
    assert not got.truncated[2 * g] and got.completion_mask[2 * g].sum() < t and stop[0] in got.completions[2 * g]
