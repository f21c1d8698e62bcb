"""Asynchronous rollouts (grpo/async_rollouts.py): max_staleness 0 is the synchronous loop bit for bit; with
max_staleness 1 every rollout is sampled by the policy one version back (its sampler log-probs are that
version's, not the current one's); a resumed async run equals an uninterrupted one; unsupported combinations
are refused; a producer failure reaches the trainer."""

import pytest
import torch

from grpo.config import ConfigError, GRPOArguments, parse_config
from tests.conftest import SMOKE_RECIPE
from tests.test_trainer import make_trainer, read_metrics, trainable

ASYNC = ["--async_rollouts", "true", "--max_staleness"]
COMPARED = ("reward", "loss", "kl", "grad_norm", "completion_length/mean", "rewards/char_diversity", "entropy")


def _run(folder, *flags):
    trainer = make_trainer(folder, "--max_steps", "3", "--learning_rate", "1e-2", *flags)
    trainer.train()
    return trainer, read_metrics(folder)


@pytest.mark.parametrize("sampler", ["hf", "replay"])
def test_staleness_zero_is_the_synchronous_loop(tmp_path, sampler):
    sync, a = _run(tmp_path / "sync", "--sampler", sampler)
    asyn, b = _run(tmp_path / "async", "--sampler", sampler, *ASYNC, "0")
    assert [r["step"] for r in b] == [1, 2, 3]
    for key in COMPARED:
        assert [r[key] for r in b] == [r[key] for r in a], key  # exactly: same draws, same weights
    assert [r["async/staleness_max"] for r in b] == [0, 0, 0]
    assert [r["async/policy_version"] for r in b] == [0, 1, 2]
    for name, value in trainable(sync).items():
        assert torch.equal(trainable(asyn)[name], value), name
    assert a[0]["reward"] != a[2]["reward"] or a[0]["loss"] != a[2]["loss"]  # the runs do change across steps


def _record(trainer):
    """Wrap the producer hand-over and the weight publication: the rollouts trained, and every version's weights."""
    taken, versions = [], {0: trainable(trainer)}
    take, publish = trainer.rollouts.next, trainer.sync_sampler

    def next_rollout():
        scored = take()
        taken.append((trainer.global_step // trainer.args.steps_per_rollout, scored))
        return scored

    def sync():
        publish()
        versions[trainer.global_step // trainer.args.steps_per_rollout] = trainable(trainer)

    trainer.rollouts.next, trainer.sync_sampler = next_rollout, sync
    return taken, versions


def _logprobs_under(trainer, weights, scored):
    """Masked log-probs ``[N, T]`` of the rollout's completions under ``weights`` (the policy's trainable tensors)."""
    params = dict(trainer.unwrapped_policy.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    batch = trainer.make_batch(scored.rollout, torch.zeros(len(scored.rollout)))
    return trainer._logprobs_over(batch, trainer.policy), batch.completion_mask.bool()


def test_staleness_one_samples_each_rollout_one_version_back(tmp_path):
    trainer = make_trainer(tmp_path, "--max_steps", "4", "--learning_rate", "5e-2", *ASYNC, "1")
    taken, versions = _record(trainer)
    trainer.train()
    records = read_metrics(tmp_path)
    assert [r["async/staleness_max"] for r in records] == [0, 1, 1, 1]  # rollout 0: nothing older exists
    assert [r["async/policy_version"] for r in records] == [0, 0, 1, 2]
    assert all(r["async/queue_depth"] <= 2 for r in records)
    for k, scored in taken[1:]:
        sampled = scored.rollout.sampler_logprobs
        old, mask = _logprobs_under(trainer, versions[k - 1], scored)
        new, _ = _logprobs_under(trainer, versions[k], scored)
        torch.testing.assert_close(sampled[mask], old[mask], atol=1e-5, rtol=0)  # the behaviour policy: k - 1
        assert (sampled[mask] - new[mask]).abs().max() > 1e-3  # negative control: not the trained-on weights


def test_async_resume_equals_the_uninterrupted_run(tmp_path):
    flags = ["--max_steps", "4", "--save_steps", "2", "--learning_rate", "1e-2", *ASYNC, "1"]
    full = make_trainer(tmp_path / "full", *flags)
    full.train()
    part = make_trainer(tmp_path / "part", *flags)
    save = part.save_checkpoint

    def preempted():  # the job dies right after checkpoint-2, with rollout 2 queued and rollout 3 in flight
        save()
        raise KeyboardInterrupt

    part.save_checkpoint = preempted
    with pytest.raises(KeyboardInterrupt):
        part.train()
    assert (tmp_path / "part" / "checkpoint-2" / "async_rollouts.pt").is_file()
    resumed = make_trainer(tmp_path / "part", *flags, "--resume_from_checkpoint", "latest")
    assert resumed.global_step == 2 and sorted(resumed.rollouts.ready) == [2]  # the queue survived
    resumed.save_checkpoint()  # saved again before sampling anything: the queue is still kept
    saved = torch.load(tmp_path / "part" / "checkpoint-2" / "async_rollouts.pt", weights_only=False)
    assert [index for index, _, _ in saved["queue"]] == [2]
    resumed.train()
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in COMPARED + ("async/policy_version", "async/staleness_max"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-6, abs=1e-9), key
    for name, value in trainable(full).items():
        torch.testing.assert_close(trainable(resumed)[name], value, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--curriculum", "true"], "curriculum"),
        (["--on_collapse", "rollback", "--save_steps", "1"], "on_collapse"),
        (["--sampler", "vllm"], "sampler"),
    ],
)
def test_unsupported_combinations_are_refused(tmp_path, flags, message):
    with pytest.raises(ConfigError, match=f"async_rollouts: {message}=.* is not supported yet"):
        parse_config([SMOKE_RECIPE, *ASYNC, "1", *flags])
    with pytest.raises(ValueError, match="max_staleness must be >= 0"):
        GRPOArguments(max_staleness=-1)


def test_a_producer_failure_reaches_the_trainer(tmp_path):
    trainer = make_trainer(tmp_path, *ASYNC, "1")

    def broken(completions, **kwargs):
        raise ZeroDivisionError("reward bug")

    trainer.reward_funcs.append(broken)
    trainer.reward_names.append("broken")
    trainer.reward_weights = torch.ones(len(trainer.reward_funcs))
    with pytest.raises(RuntimeError, match="rollout producer failed.*reward bug"):
        trainer.train()
    assert not trainer.rollouts.thread.is_alive()


def test_dynamic_sampling_runs_on_the_producer(tmp_path):
    _, records = _run(tmp_path, *ASYNC, "1", "--dynamic_sampling", "true", "--max_generation_rounds", "2")
    assert all("dynamic_sampling/rounds" in r and "async/staleness_max" in r for r in records)


def test_sync_bytes_of_a_colocated_snapshot(tmp_path):
    trainer = make_trainer(tmp_path, "--max_steps", "1", *ASYNC, "1")
    trainer.train()
    expected = sum(p.numel() * p.element_size() for p in trainer.unwrapped_policy.parameters() if p.requires_grad)
    assert read_metrics(tmp_path)[0]["sync_bytes"] == expected


def test_bench_summary_uses_the_steps_after_the_warm_up():
    import sys

    from tests.conftest import ROOT

    sys.path.insert(0, ROOT)
    from benchmarks.bench_async import parse_args, summarise

    def rec(step, sample, update, wait=None):
        r = {"step_time_s": step, "time/sample_s": sample, "time/rewards_s": 0.0, "time/update_s": update}
        r.update({"completion_length/mean": 10.0, "_n": 4, "sync_time_s": 0.1, "sync_bytes": 8})
        if wait is not None:
            r.update({"async/trainer_wait_s": wait, "async/sampler_wait_s": 0.0, "async/staleness_max": 1.0})
        return r

    s = summarise([rec(99.0, 99.0, 99.0), rec(2.0, 1.0, 1.5), rec(2.0, 1.0, 1.5)])
    assert s["step_s"] == 2.0 and s["sample_s"] == 1.0 and s["train_s"] == 1.5 and s["steps_measured"] == 2
    assert s["trainer_idle_share"] == 0.25 and s["sampler_idle_share"] == 0.5 and s["tokens_per_s"] == 20.0
    assert "trainer_wait_s" not in s and summarise([rec(1, 1, 1, 0.5), rec(1, 1, 1, 0.5)])["trainer_wait_s"] == 0.5
    with pytest.raises(SystemExit):
        parse_args(["--steps", "1"])
