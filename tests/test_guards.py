"""Run guards (grpo/guards.py): injected faults caught as specified, each with a negative control (the same run
with the guard off lets the fault through), and the collapse verdicts on scripted records."""

import math
import os

import pytest
import torch
from safetensors.torch import load_file

import grpo.trainer as trainer_module
from grpo.config import GRPOArguments
from grpo.guards import RunGuard, TrainingCollapsed, halve_learning_rate
from tests.test_trainer import make_trainer, read_metrics, trainable

# --- the guard alone, on scripted records ---------------------------------------------------------------------


def guard(**kwargs):
    return RunGuard(GRPOArguments(num_generations=4, per_device_train_batch_size=4, **kwargs))


def test_collapse_verdicts_on_a_scripted_entropy_history():
    g = guard(collapse_patience=3, collapse_entropy_floor=0.5)
    g.saved("run/checkpoint-2")
    # entropies at steps 1-7: bad at 2, 3 (streak broken at 4), then 5, 6, 7: the third in a row stops
    for step, entropy in enumerate([1.0, 0.4, 0.3, 1.0, 0.2, 0.1], start=1):
        assert g.check(step, {"entropy": entropy}) is None
        assert g.healthy == (entropy >= 0.5)
    g.saved("run/checkpoint-6")  # written during a bad streak: not a good checkpoint
    with pytest.raises(TrainingCollapsed) as err:
        g.check(7, {"entropy": 0.05})
    message = str(err.value)
    assert "3 rollouts in a row" in message and "steps 5-7" in message
    assert "entropy 0.05 below collapse_entropy_floor 0.5" in message and "run/checkpoint-2" in message


def test_each_signal_and_the_off_switches():
    signals = guard(collapse_zero_std=True, collapse_length_floor=2.0).signals
    assert signals({"zero_std_frac": 1.0, "completion_length/mean": 3.0}) == [
        "every group's rewards equal (zero_std_frac = 1, collapse_zero_std)"
    ]
    assert signals({"zero_std_frac": 0.5, "completion_length/mean": 2.0}) == [
        "mean completion length 2 tokens at or below collapse_length_floor 2.0"
    ]
    assert signals({"zero_std_frac": 0.5, "completion_length/mean": 2.5, "entropy": 0.0}) == []  # floor 0: off
    assert guard().signals({"zero_std_frac": 1.0, "completion_length/mean": 1.0, "entropy": 0.0}) == []
    g = guard(collapse_patience=0, collapse_zero_std=True)  # patience 0: never acts, never holds checkpoints
    assert all(g.check(s, {"zero_std_frac": 1.0}) is None and g.healthy for s in range(10))


def test_rollback_verdicts_until_none_is_left():
    g = guard(collapse_patience=1, collapse_zero_std=True, on_collapse="rollback", max_rollbacks=2, save_steps=1)
    with pytest.raises(TrainingCollapsed, match="none written yet"):
        g.check(1, {"zero_std_frac": 1.0})  # nothing to roll back to
    g.streak = 0
    g.saved("run/checkpoint-1")
    assert g.check(2, {"zero_std_frac": 1.0}) == "run/checkpoint-1" and g.healthy and g.rollbacks == 1
    assert g.check(2, {"zero_std_frac": 1.0}) == "run/checkpoint-1" and g.rollbacks == 2
    with pytest.raises(TrainingCollapsed, match="no rollback left"):
        g.check(2, {"zero_std_frac": 1.0})


def test_skipped_steps_count_and_are_a_signal():
    g = guard(collapse_patience=2)
    assert g.allow_step(1.5) and g.allow_step(None)  # None: DeepSpeed reported no norm, nothing to judge
    assert not g.allow_step(float("nan")) and not g.allow_step(torch.tensor(float("inf")))
    assert g.metrics()["guard/skipped_steps"] == 2 and g.signals({}) == [
        "2 of 4 optimizer steps skipped (non-finite loss or gradient)"
    ]
    assert g.check(1, {}) is None and g.metrics()["guard/skipped_steps"] == 0  # counts are per rollout
    assert g.metrics()["guard/skipped_steps_total"] == 2
    off = guard(guard_nonfinite=False)
    assert off.allow_step(float("nan")) and off.metrics()["guard/skipped_steps"] == 0


def test_screened_rewards_return_none_for_non_finite_values():
    def length(completions, **kwargs):
        return [math.nan, math.inf, -math.inf, 0.5, None, 1]

    g = guard()
    (screened,) = g.screen([length])
    assert screened.__name__ == "length"
    assert screened(completions=["a"] * 6) == [None, None, None, 0.5, None, 1]
    assert g.metrics()["guard/nonfinite_rewards"] == 3
    assert guard(guard_nonfinite=False).screen([length]) == [length]


def test_halve_learning_rate_on_a_warmup_schedule():
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.4)
    scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=4, num_training_steps=10)
    optimizer.step()
    scheduler.step()  # step 1 of 4 of the warmup: lr = 0.4 * 1/4
    halve_learning_rate(scheduler, optimizer, [0.4])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05) and scheduler.get_last_lr() == [pytest.approx(0.05)]
    for _ in range(5):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2)  # after the warmup: half the peak


def test_config_checks():
    with pytest.raises(ValueError, match="needs save_steps"):
        GRPOArguments(on_collapse="rollback")
    with pytest.raises(ValueError, match="on_collapse must be one of"):
        GRPOArguments(on_collapse="pray")
    with pytest.raises(ValueError, match="curriculum_min_pass_rate < curriculum_max_pass_rate"):
        GRPOArguments(curriculum_min_pass_rate=0.5, curriculum_max_pass_rate=0.5)


# --- injected faults in the trainer (tiny model) --------------------------------------------------------------


def all_finite(params) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params.values())


def nan_and_inf(completions, **kwargs):
    """A broken reward: NaN for every 4th completion, +inf for the next, 0.5 otherwise."""
    return [[math.nan, math.inf, 0.5, 0.5][i % 4] for i in range(len(completions))]


@pytest.mark.parametrize("guarded", [True, False])
def test_a_reward_returning_nan_and_inf(tmp_path, guarded):
    trainer = make_trainer(tmp_path, "--max_steps", "1", "--guard_nonfinite", str(guarded).lower())
    trainer.reward_funcs.append(nan_and_inf)
    trainer.reward_names.append("nan_and_inf")
    trainer.reward_weights = torch.cat([trainer.reward_weights, torch.ones(1)])
    before = trainable(trainer)
    trainer.train()
    after, record = trainable(trainer), read_metrics(tmp_path)[0]
    if guarded:  # counted, kept out: the step trains on the other rewards
        assert record["guard/nonfinite_rewards"] == 4  # 2 of every 4 of the 2 prompts x 4 completions
        assert all_finite(after) and any(not torch.equal(before[n], after[n]) for n in after)
    else:  # negative control: the infinite rewards make NaN advantages, and NaN weights
        assert record["guard/nonfinite_rewards"] == 0 and not all_finite(after)


@pytest.mark.parametrize("guarded", [True, False])
def test_a_loss_forced_to_inf_skips_the_step(tmp_path, monkeypatch, guarded):
    real, calls = trainer_module.policy_loss, []

    def inf_in_first_micro_batch(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        calls.append(1)
        return (loss * math.inf if len(calls) == 1 else loss), metrics

    monkeypatch.setattr(trainer_module, "policy_loss", inf_in_first_micro_batch)
    flags = ["--max_steps", "2", "--save_steps", "1", "--guard_nonfinite", str(guarded).lower()]
    trainer = make_trainer(tmp_path, *flags)
    before, snapshots = trainable(trainer), []
    sync = trainer.sync_sampler
    trainer.sync_sampler = lambda: (sync(), snapshots.append(trainable(trainer)))
    trainer.train()
    step1, step2 = snapshots
    records = read_metrics(tmp_path)
    if guarded:
        assert all(torch.equal(step1[n], before[n]) for n in before)  # step 1 never reached the weights
        assert [r["guard/skipped_steps"] for r in records] == [1, 0]
        assert all_finite(step2) and any(not torch.equal(before[n], step2[n]) for n in step2)  # step 2 trained
        moments = trainer.optimizer.state[next(p for p in trainer.policy.parameters() if p.requires_grad)]
        assert int(moments["step"]) == 1 and bool(torch.isfinite(moments["exp_avg"]).all())
        assert not os.path.exists(tmp_path / "checkpoint-1")  # a bad rollout: its checkpoint waits
    else:  # negative control: the infinite loss's gradient reaches the weights as NaN
        assert not all_finite(step1) and [r["guard/skipped_steps"] for r in records] == [0, 0]


def constant_after(trainer, good_calls: int, bad_calls: int = 10**9, tokens: int | None = None):
    """Make the sampler return one completion for every row (the first row's, cut to ``tokens``) on the calls
    after the first ``good_calls``, for ``bad_calls`` calls: a policy collapsed to a constant output."""
    real, calls = trainer.sampler.generate, []

    def generate(prompt_ids, num_generations):
        rollout = real(prompt_ids, num_generations)
        calls.append(1)
        if not good_calls < len(calls) <= good_calls + bad_calls:
            return rollout
        n = len(rollout)
        rollout.completion_ids[:] = rollout.completion_ids[0]
        rollout.completion_mask[:] = rollout.completion_mask[0]
        if tokens is not None:
            rollout.completion_mask[:, tokens:] = 0
        rollout.truncated[:] = rollout.truncated[0]
        ids = rollout.completion_ids[0][rollout.completion_mask[0].bool()]
        rollout.completions = [trainer.tokenizer.decode(ids, skip_special_tokens=True)] * n
        if rollout.sampler_logprobs is not None:
            rollout.sampler_logprobs[:] = rollout.sampler_logprobs[0]
        return rollout

    trainer.sampler.generate = generate


@pytest.mark.parametrize("guarded", [True, False])
def test_a_policy_forced_to_a_constant_output_stops_the_run(tmp_path, guarded):
    signals = ["--collapse_zero_std", "true", "--collapse_length_floor", "1"] if guarded else []
    trainer = make_trainer(tmp_path, "--max_steps", "4", "--save_steps", "1", "--collapse_patience", "2", *signals)
    constant_after(trainer, good_calls=1, tokens=1)
    if guarded:
        with pytest.raises(TrainingCollapsed) as err:
            trainer.train()
        message = str(err.value)
        assert "2 rollouts in a row" in message and "steps 2-3" in message
        assert "zero_std_frac = 1" in message and "collapse_length_floor" in message
        assert str(tmp_path / "checkpoint-1") in message
        assert not os.path.exists(tmp_path / "checkpoint-2")  # no checkpoint during the bad streak
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    else:  # negative control: the collapsed run trains on to max_steps without a word
        trainer.train()
        records = read_metrics(tmp_path)
        assert [r["step"] for r in records] == [1, 2, 3, 4]
        assert [r["zero_std_frac"] for r in records[1:]] == [1.0, 1.0, 1.0]
        assert [r["completion_length/mean"] for r in records[1:]] == [1.0, 1.0, 1.0]


def test_rollback_reloads_the_last_good_checkpoint_with_half_the_learning_rate(tmp_path):
    flags = ["--max_steps", "3", "--save_steps", "1", "--save_total_limit", "10", "--collapse_patience", "2"]
    trainer = make_trainer(tmp_path, *flags, "--collapse_zero_std", "true", "--on_collapse", "rollback")
    constant_after(trainer, good_calls=1, bad_calls=2)  # steps 2 and 3 collapse, then the sampler recovers
    restored = {}
    load = trainer.load_checkpoint

    def load_and_look(folder):
        load(folder)
        moments = trainer.optimizer.state[next(p for p in trainer.policy.parameters() if p.requires_grad)]
        restored.update(folder=folder, weights=trainable(trainer), step=trainer.global_step, adam=int(moments["step"]))

    trainer.load_checkpoint = load_and_look
    trainer.train()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 2, 3]  # steps 2-3 rolled back and taken again
    assert restored["folder"] == str(tmp_path / "checkpoint-1") and restored["step"] == 1 and restored["adam"] == 1
    saved = load_file(os.path.join(tmp_path, "checkpoint-1", "model", "model.safetensors"))
    assert all(torch.equal(saved[n], w) for n, w in restored["weights"].items())
    lr = records[0]["lr"]
    assert [r["lr"] for r in records] == [lr, lr, lr, lr / 2, lr / 2]
    assert [r["guard/rollbacks"] for r in records] == [0, 0, 0, 1, 1]
    assert [r["zero_std_frac"] < 1 for r in records[3:]] == [True, True]
    assert all_finite(trainable(trainer)) and os.path.isdir(tmp_path / "checkpoint-3")


# --- several processes: all agree to skip ----------------------------------------------------------------------

FAULTY_TRAIN = """
import math, os, sys
import grpo.trainer as trainer_module
from grpo.cli import train_main

real, calls = trainer_module.policy_loss, []

def inf_on_rank_1(*args, **kwargs):  # the first micro-batch of process 1 only
    loss, metrics = real(*args, **kwargs)
    calls.append(1)
    return (loss * math.inf if os.environ["RANK"] == "1" and len(calls) == 1 else loss), metrics

trainer_module.policy_loss = inf_on_rank_1
sys.exit(train_main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ddp", "zero2"])
def test_all_processes_skip_when_one_has_an_inf_loss(tmp_path, config):
    """2 processes, an infinite loss on process 1 only: both skip step 1 (no hang, no NaN), both take step 2."""
    import subprocess
    import sys

    from tests.conftest import ROOT, SMOKE_RECIPE
    from tests.test_distributed import CONFIGS, STEP_FLAGS, TWO_PROCESSES, free_port, initial_weights, saved_weights

    if config != "ddp":
        pytest.importorskip("deepspeed")
    script = tmp_path / "faulty_train.py"
    script.write_text(FAULTY_TRAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "WANDB_MODE": "disabled"}
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/grpo/torch_extensions"))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"{CONFIGS}/{config}.yaml"]
    command += ["--num_processes", "2", "--main_process_port", str(free_port()), str(script), "--config", SMOKE_RECIPE]
    command += ["--output_dir", str(out), *STEP_FLAGS, *TWO_PROCESSES, "--collapse_patience", "0"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    records = read_metrics(out)
    assert [r["guard/skipped_steps"] for r in records] == [1, 0]
    start, step1, step2 = initial_weights(), saved_weights(out / "checkpoint-1"), saved_weights(out / "checkpoint-2")
    assert all(torch.equal(step1[k], start[k]) for k in step1 if k in start)  # step 1 skipped on both
    assert all_finite(step2) and any(not torch.equal(step2[k], start[k]) for k in step2 if k in start)
