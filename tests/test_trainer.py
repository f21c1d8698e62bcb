"""End-to-end checks of the loop on the tiny recipe: parameters move, metrics are complete,
resume continues exactly, checkpoints are atomic, exports reload."""

import json
import os

import pytest
import torch

from grpo.config import parse_config
from grpo.trainer import GRPOTrainer
from tests.conftest import SMOKE_RECIPE

REQUIRED_METRICS = [
    "step",
    "reward",
    "reward_std",
    "completion_length/mean",
    "completion_length/min",
    "completion_length/max",
    "completion_length/correct_mean",
    "completion_length/incorrect_mean",
    "truncated_frac",
    "zero_std_frac",
    "kl",
    "entropy",
    "clip_frac/low",
    "clip_frac/high",
    "grad_norm",
    "lr",
    "sample_tokens_per_s",
    "step_time_s",
    "reflection_rate",
]


def char_diversity(completions, **kwargs):
    """A reward that varies across random completions, so a random tiny model gets non-zero advantages."""
    return [len(set(c)) / max(len(c), 1) for c in completions]


def make_trainer(tmp_path, *flags, reward=True):
    configs = parse_config([SMOKE_RECIPE, "--output_dir", str(tmp_path), *flags])
    trainer = GRPOTrainer(*configs)
    if reward:  # keep accuracy/format (checked for their metrics) and add a reward with spread
        trainer.reward_funcs.append(char_diversity)
        trainer.reward_names.append("char_diversity")
        trainer.reward_weights = torch.cat([trainer.reward_weights, torch.ones(1)])
    return trainer


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def trainable(trainer):
    return {n: p.detach().clone() for n, p in trainer.unwrapped_policy.named_parameters() if p.requires_grad}


def test_two_steps_move_every_parameter_and_log_every_field(tmp_path):
    trainer = make_trainer(tmp_path)
    before = trainable(trainer)
    trainer.train()
    after = trainable(trainer)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"parameters that did not change: {unchanged[:5]}"
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        missing = [k for k in REQUIRED_METRICS if k not in record]
        assert not missing, missing
        assert all(f"rewards/{n}" in record for n in ("accuracy", "format", "char_diversity"))
        assert torch.isfinite(torch.tensor(record["loss"]))
    assert records[1]["kl"] > 0  # beta > 0: the policy moved away from the reference after step 1
    with open(tmp_path / "completions.jsonl") as f:
        samples = [json.loads(line) for line in f]
    assert len(samples) == 2 * 2 and {"prompt", "completion", "reward", "advantage"} <= set(samples[0])
    assert os.path.isdir(tmp_path / "checkpoint-2") and os.path.isfile(tmp_path / "config.yaml")


def test_lora_reference_is_the_adapter_free_base(tmp_path):
    trainer = make_trainer(
        tmp_path, "--use_peft", "true", "--lora_r", "4", "--learning_rate", "5e-2", "--max_steps", "2"
    )
    assert trainer.ref_model is None  # no second copy of the weights
    names = set(trainable(trainer))
    assert names and all("lora_" in n for n in names)
    trainer.train()
    records = read_metrics(tmp_path)
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: adapter B = 0, policy == base
    assert records[1]["kl"] > 0


def test_beta_zero_loads_no_reference(tmp_path):
    trainer = make_trainer(tmp_path, "--beta", "0", "--max_steps", "1")
    assert trainer.ref_model is None
    trainer.train()
    assert read_metrics(tmp_path)[0]["kl"] == 0.0


def test_resume_continues_at_the_right_step_with_the_right_lr(tmp_path):
    schedule = ["--lr_scheduler_type", "cosine", "--warmup_steps", "1", "--max_steps", "4", "--save_steps", "2"]
    full = make_trainer(tmp_path / "full", *schedule)
    full.train()
    # the same run, cut after step 2 (its checkpoint-2), then resumed from "latest"
    part = make_trainer(tmp_path / "part", *schedule)
    part.args.max_steps = 2
    part.train()
    resumed = make_trainer(tmp_path / "part", *schedule, "--resume_from_checkpoint", "latest")
    assert resumed.global_step == 2 and resumed.prompts.batches_drawn == 2
    resumed.train()
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("lr", "reward", "loss", "completion_length/mean"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-5, abs=1e-7), key
    assert a[1]["lr"] != a[3]["lr"]  # the cosine schedule really changes the lr across the resume point
    for name, value in trainable(full).items():
        torch.testing.assert_close(trainable(resumed)[name], value, atol=1e-6, rtol=1e-5)


def test_resume_after_preemption_logs_each_step_once(tmp_path):
    """A run preempted after step 3 whose last checkpoint is step 2: rerun with `auto`, steps 3 and 4 run again and
    metrics.jsonl / completions.jsonl hold each step once (the rows logged after checkpoint-2 are dropped)."""
    import shutil

    flags = ["--max_steps", "4", "--save_steps", "2", "--num_completions_to_log", "1"]
    first = make_trainer(tmp_path, *flags, "--resume_from_checkpoint", "auto")
    assert first.global_step == 0  # auto with no checkpoint: a fresh start
    first.args.max_steps = 3
    first.train()  # checkpoints 2 and 3; then "preempted" before checkpoint-3 was written:
    shutil.rmtree(tmp_path / "checkpoint-3")
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "reward": 0.')  # a line torn by the crash
    resumed = make_trainer(tmp_path, *flags, "--resume_from_checkpoint", "auto")
    assert resumed.global_step == 2  # auto: the newest checkpoint
    resumed.train()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    with open(tmp_path / "completions.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4]


def test_resume_latest_without_checkpoint_is_a_config_error(tmp_path):
    from grpo.config import ConfigError

    with pytest.raises(ConfigError, match="resume_from_checkpoint.*no checkpoint"):
        make_trainer(tmp_path, "--resume_from_checkpoint", "latest")


def test_failed_checkpoint_write_leaves_nothing_behind(tmp_path):
    from grpo.checkpoint import list_checkpoints, save_checkpoint

    save_checkpoint(str(tmp_path), 1, lambda folder: open(os.path.join(folder, "trainer_state.json"), "w").write("{}"))

    def crash(folder):
        open(os.path.join(folder, "trainer_state.json"), "w").write("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(str(tmp_path), 2, crash)
    assert os.listdir(tmp_path) == ["checkpoint-1"]
    assert list_checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint-1")]


@pytest.mark.parametrize("peft", [True, False])
def test_export_reloads_and_generates_the_same_greedy_text(tmp_path, peft):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo.cli import main

    flags = ["--max_steps", "1", "--learning_rate", "5e-2"] + (["--use_peft", "true", "--lora_r", "4"] if peft else [])
    trainer = make_trainer(tmp_path / "run", *flags)
    trainer.train()
    assert main(["export", str(tmp_path / "run" / "checkpoint-1"), str(tmp_path / "export")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert os.path.isfile(tmp_path / "export" / "model.safetensors")
    assert tokenizer.chat_template and not any(n.startswith("base_model") for n in exported.state_dict())
    prompt = tokenizer(trainer.dataset.rows[0]["prompt"], return_tensors="pt")
    policy = trainer.unwrapped_policy.eval()
    with torch.no_grad():
        ours = policy.generate(**prompt, max_new_tokens=12, do_sample=False)
        theirs = exported.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, theirs)


def half_constant(completions, solution, **kwargs):
    """Constant (1.0) for prompts with an even gold answer, varying otherwise: half the groups carry no signal."""
    return [1.0 if int(s) % 2 == 0 else len(set(c)) / max(len(c), 1) for c, s in zip(completions, solution)]


def test_dynamic_sampling_fills_the_batch_with_informative_groups(tmp_path):
    trainer = make_trainer(
        tmp_path, "--dynamic_sampling", "true", "--max_generation_rounds", "8", "--max_steps", "2", reward=False
    )
    trainer.reward_funcs, trainer.reward_names, trainer.reward_weights = [half_constant], ["half"], torch.ones(1)
    drawn_before = trainer.prompts.batches_drawn
    scored = trainer.sample_and_score()
    rows, rollout, rewards = scored.rows, scored.rollout, scored.rewards
    g, b = trainer.args.num_generations, trainer.args.prompts_per_rollout
    assert len(rows) == b and len(rollout) == b * g and rewards.shape == (b * g,)
    assert all(int(r["solution"]) % 2 for r in rows)  # only the informative (odd-answer) groups were kept
    groups = rewards.view(b, g)
    assert bool((groups.max(1).values > groups.min(1).values).all())
    stats = scored.sampling_stats
    rounds = trainer.prompts.batches_drawn - drawn_before
    assert stats["dynamic_sampling/rounds"] == rounds and stats["dynamic_sampling/filled_groups"] == 0
    sampled_even = sum(int(trainer.dataset.rows[i]["solution"]) % 2 == 0 for i in _drawn(trainer, drawn_before, rounds))
    assert stats["dynamic_sampling/dropped_groups"] == sampled_even
    for i, row in enumerate(rows):  # the rollout rows still belong to their prompts
        real = rollout.prompt_ids[i * g][rollout.prompt_mask[i * g].bool()].tolist()
        assert real == row["prompt_ids"]
    trainer.train()
    assert "dynamic_sampling/rounds" in read_metrics(tmp_path)[0]


def _drawn(trainer, first, count):
    from grpo.data import PromptSampler

    replay = PromptSampler(len(trainer.dataset), trainer.args.prompts_per_rollout, trainer.args.seed)
    replay.batches_drawn = first
    return [i for _ in range(count) for i in replay.next_indices()]


def test_dynamic_sampling_cap_tops_up_and_counts(tmp_path):
    trainer = make_trainer(tmp_path, "--dynamic_sampling", "true", "--max_generation_rounds", "2", reward=False)
    constant = lambda completions, **kw: [0.5] * len(completions)  # noqa: E731 - every group uninformative
    trainer.reward_funcs, trainer.reward_names, trainer.reward_weights = [constant], ["constant"], torch.ones(1)
    scored = trainer.sample_and_score()
    b = trainer.args.prompts_per_rollout
    assert len(scored.rows) == b and scored.sampling_stats == {
        "dynamic_sampling/rounds": 2,
        "dynamic_sampling/dropped_groups": 2 * b,
        "dynamic_sampling/filled_groups": b,
    }


def test_multiple_iterations_use_old_logprobs_once(tmp_path):
    trainer = make_trainer(
        tmp_path,
        "--num_iterations",
        "2",
        "--steps_per_generation",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--max_steps",
        "4",
        "--learning_rate",
        "1e-2",
    )
    calls = []
    original = trainer._logprobs_over
    trainer._logprobs_over = lambda batch, model: calls.append(model) or original(batch, model)
    trainer.train()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [4]  # one rollout, 2 iterations x 2 mini-batches = 4 optimizer steps
    assert len(calls) == 2  # old log-probs once (policy) and reference once, per rollout
    assert records[0]["ratio/mean"] != 1.0  # later steps of the rollout are off-policy


def test_mask_truncated_completions_leaves_them_out_of_the_loss(tmp_path):
    trainer = make_trainer(tmp_path, "--mask_truncated_completions", "true", "--beta", "0")
    rollout = trainer.sample_and_score().rollout
    rollout.truncated[::2] = True  # pretend every other completion hit the cap
    rollout.truncated[1::2] = False
    batch = trainer.make_batch(rollout, torch.ones(len(rollout)))
    assert batch.completion_mask[::2].sum() == 0
    assert torch.equal(batch.completion_mask[1::2], rollout.completion_mask[1::2].float())


def test_trained_problems_replays_exactly_what_training_drew(tmp_path):
    from grpo.data import heldout_rows, trained_problems

    trainer = make_trainer(tmp_path, "--max_steps", "3")
    drawn = []
    original = trainer.next_prompts
    trainer.next_prompts = lambda: (rows := original(), drawn.extend(r["problem"] for r in rows))[0]
    trainer.train()
    assert trained_problems(str(tmp_path)) == set(drawn) and len(drawn) == 3 * trainer.args.prompts_per_rollout
    rows = trainer.dataset.rows
    kept = heldout_rows(rows, set(drawn), limit=5)
    assert len(kept) == 5 and not {r["problem"] for r in kept} & set(drawn)
    assert len({r["problem"] for r in kept}) == 5  # repeats dropped too


def test_evaluation_during_training_is_logged(tmp_path):
    bench = tmp_path / "mini.jsonl"
    bench.write_text('{"question": "What is 2 + 2?", "answer": "4"}\n{"question": "What is 3 + 4?", "answer": "7"}\n')
    trainer = make_trainer(
        tmp_path / "run",
        "--max_steps",
        "2",
        "--eval_steps",
        "2",
        "--eval_benchmarks",
        str(bench),
        "--eval_limit",
        "2",
        "--eval_num_samples",
        "2",
    )
    trainer.train()
    first, second = read_metrics(tmp_path / "run")
    assert not any(k.startswith("eval/") for k in first)  # step 1: not an eval step
    evals = {k: v for k, v in second.items() if k.startswith("eval/")}
    assert {k.rsplit("/", 1)[1] for k in evals} >= {"pass@1", "pass@2", "maj@2", "completion_length"}
    assert all(v is None or 0.0 <= v <= 16 for v in evals.values())


def test_tensorboard_tracker_writes_events(tmp_path):
    trainer = make_trainer(tmp_path, "--max_steps", "1", "--report_to", "tensorboard")
    trainer.train()
    events = [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith("events.out.tfevents")]
    assert events, "no TensorBoard event file"
    with open(tmp_path / "config.yaml") as f:
        assert "report_to:\n  - tensorboard" in f.read()
