"""The optimised training step computes what the plain one did: same loss, same gradients, same fixed
log-probs, on a fixed batch of the tiny model.

The plain step below is the trainer's code before the speed changes, kept verbatim as the reference:
entropies always with autograd, fixed log-probs on untrimmed row slices, old log-probs always
recomputed with a forward pass.
"""

import contextlib

import pytest
import torch

from grpo.algo.loss import GlobalCounts, policy_loss
from grpo.config import parse_config
from grpo.logprobs import completion_logprobs, completion_logprobs_shared_prompts, prompt_groups
from grpo.samplers.base import SamplingConfig
from grpo.samplers.decode import sample_groups
from grpo.trainer import GRPOTrainer
from grpo.types import TrainBatch
from tests.conftest import SMOKE_RECIPE


def make_trainer(tmp_path, *flags):
    return GRPOTrainer(*parse_config([SMOKE_RECIPE, "--output_dir", str(tmp_path), *flags]))


def fixed_rollout(trainer, seed=0):
    """8 completions of 2 prompts of different lengths, with rows that end early (extra EOS ids)."""
    torch.manual_seed(seed)
    tok = trainer.tokenizer
    prompts = [trainer.dataset.rows[0]["prompt_ids"], trainer.dataset.rows[1]["prompt_ids"][5:]]
    eos = sorted(set(torch.randint(3, len(tok), (2500,)).tolist()) | {tok.eos_token_id})
    config = SamplingConfig(trainer.args.max_completion_length, trainer.args.temperature)
    rollout = sample_groups(trainer.unwrapped_policy, prompts, 4, config, tok, eos)
    assert rollout.completion_mask.sum(1).min() < rollout.completion_ids.shape[1]  # some rows ended early
    return rollout


def plain_logprobs_over(trainer, batch, model):
    """The pre-optimisation ``_logprobs_over``: untrimmed row slices."""
    parts, size = [], trainer.args.per_device_train_batch_size
    for start in range(0, len(batch), size):
        rows = slice(start, start + size)
        adapter_off = trainer.unwrapped_policy.disable_adapter() if model is None else contextlib.nullcontext()
        with adapter_off, torch.no_grad():
            lp, _ = completion_logprobs(
                trainer.policy if model is None else model,
                batch.prompt_ids[rows],
                batch.prompt_mask[rows],
                batch.completion_ids[rows],
                batch.completion_mask[rows],
                trainer.args.temperature,
            )
        parts.append(lp)
    return torch.cat(parts)


def plain_step(trainer, minibatch):
    """The pre-optimisation ``optimizer_step`` up to the clip: summed loss and the gradients."""
    args, acc = trainer.args, trainer.accelerator
    num_tokens = float(minibatch.completion_mask.sum())
    total = 0.0
    for micro in minibatch.split(args.per_device_train_batch_size):
        with acc.accumulate(trainer.policy):
            logprobs, entropy = completion_logprobs(
                trainer.policy,
                micro.prompt_ids,
                micro.prompt_mask,
                micro.completion_ids,
                micro.completion_mask,
                args.temperature,
                with_entropy=True,
            )
            assert entropy.requires_grad
            loss, _ = policy_loss(
                logprobs,
                micro.old_logprobs,
                micro.advantages,
                micro.completion_mask,
                args.loss_settings(),
                ref_logprobs=micro.ref_logprobs,
                entropies=entropy,
                counts=GlobalCounts(len(minibatch), num_tokens),
            )
            acc.backward(loss * args.gradient_accumulation_steps)
            total += float(loss.detach())
    return total, grads_and_clear(trainer)


def grads_and_clear(trainer):
    grads = {n: p.grad.detach().clone() for n, p in trainer.unwrapped_policy.named_parameters() if p.grad is not None}
    trainer.optimizer.zero_grad(set_to_none=True)
    return grads


def optimised_step(trainer, minibatch):
    """The trainer's ``optimizer_step`` with the optimizer step replaced by a capture of the gradients."""
    captured = {}

    def capture():
        captured.update(grads_and_clear(trainer))
        return 0.0

    trainer._clip_and_step = capture
    stats = trainer.optimizer_step(minibatch)
    return stats["loss"], captured


@pytest.mark.parametrize(
    "flags",
    [
        [],  # entropy only a metric: computed without autograd now
        ["--top_entropy_quantile", "0.5"],  # the quantile mask uses detached entropies
        ["--entropy_coef", "0.05"],  # the bonus needs the entropy gradient: kept
        ["--loss_type", "dapo", "--num_iterations", "2", "--use_peft", "true", "--lora_r", "4"],
    ],
)
def test_optimised_step_equals_plain_step(tmp_path, flags):
    trainer = make_trainer(tmp_path, *flags)
    assert trainer.logprob_fn is completion_logprobs_shared_prompts
    with torch.no_grad():  # a policy away from the reference, so KL and its gradient are not zero
        for name, p in trainer.unwrapped_policy.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * (0.5 if "lora_B" in name else 0.01))
    rollout = fixed_rollout(trainer)
    advantages = torch.randn(len(rollout))
    batch = trainer.make_batch(rollout, advantages)
    assert batch.ref_logprobs is not None
    plain = TrainBatch(batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask, advantages)
    plain.ref_logprobs = plain_logprobs_over(trainer, plain, trainer.ref_model)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(batch.ref_logprobs[mask], plain.ref_logprobs[mask], atol=1e-5, rtol=0)
    if trainer.args.num_iterations > 1:  # old log-probs: the shared-prompt forward equals the plain one
        plain.old_logprobs = plain_logprobs_over(trainer, plain, trainer.policy)
        torch.testing.assert_close(batch.old_logprobs[mask], plain.old_logprobs[mask], atol=1e-5, rtol=0)
    # the step itself on one fixed batch (the optimised fixed log-probs, so only the step differs)
    plain.ref_logprobs, plain.old_logprobs = batch.ref_logprobs, batch.old_logprobs
    want_loss, want_grads = plain_step(trainer, plain)
    got_loss, got_grads = optimised_step(trainer, batch)
    assert got_loss == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
    assert want_grads.keys() == got_grads.keys() and want_grads
    worst = max(float((got_grads[n] - want_grads[n]).norm() / want_grads[n].norm()) for n in want_grads)
    print("loss", got_loss, want_loss, "worst relative gradient difference", worst)
    assert worst < 1e-4  # float32 rounding: the shared-prompt forward sums in another order
    if trainer.args.num_iterations > 1:  # and with the recomputed old log-probs the loss is the same to 1e-5
        recomputed = TrainBatch(
            batch.prompt_ids,
            batch.prompt_mask,
            batch.completion_ids,
            batch.completion_mask,
            advantages,
            plain_logprobs_over(trainer, plain, trainer.policy),
            batch.ref_logprobs,
        )
        loss_recomputed, _ = plain_step(trainer, recomputed)
        assert loss_recomputed == pytest.approx(want_loss, abs=1e-5)


def test_shared_prompt_logprobs_equal_the_plain_ones_with_gradients(tiny_model):
    from grpo.samplers.decode import left_pad

    torch.manual_seed(5)
    prompts = [[5, 6, 7, 8, 9]] * 3 + [[11, 12]] * 2 + [[13, 14, 15]]  # runs of 3, 2 and 1 rows
    p_ids, p_mask = left_pad(prompts, pad_id=2)
    c_ids = torch.randint(3, 1000, (6, 7))
    c_mask = (torch.arange(7)[None, :] < torch.tensor([7, 3, 5, 1, 7, 6])[:, None]).long()
    first, inverse = prompt_groups(p_ids, p_mask)
    assert first.tolist() == [0, 3, 5] and inverse.tolist() == [0, 0, 0, 1, 1, 2]
    results = []
    for fn in (completion_logprobs, completion_logprobs_shared_prompts):
        tiny_model.zero_grad(set_to_none=True)
        lp, ent = fn(tiny_model, p_ids, p_mask, c_ids, c_mask, 0.7, with_entropy=True, chunk_rows=4)
        ((lp * c_mask).sum() + (ent * c_mask).sum() * 0.1).backward()
        results.append((lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in tiny_model.named_parameters()}))
    tiny_model.zero_grad(set_to_none=True)
    (lp0, ent0, g0), (lp1, ent1, g1) = results
    mask = c_mask.bool()
    torch.testing.assert_close(lp1[mask], lp0[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(ent1[mask], ent0[mask], atol=1e-4, rtol=1e-5)
    for name in g0:
        assert float((g1[name] - g0[name]).norm() / g0[name].norm()) < 1e-4, name
    # no shared prompt: exactly the plain computation
    with torch.no_grad():
        alone = completion_logprobs_shared_prompts(tiny_model, p_ids[2:4], p_mask[2:4], c_ids[2:4], c_mask[2:4])[0]
        plain = completion_logprobs(tiny_model, p_ids[2:4], p_mask[2:4], c_ids[2:4], c_mask[2:4])[0]
    assert torch.equal(alone, plain)
