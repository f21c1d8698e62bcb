"""Several processes, DDP and DeepSpeed ZeRO on CPU (gloo): runs finish with world size 2, one optimizer
step on 2 processes equals the step on 1 process with the same global batch (fixed completions from the
replay sampler), ZeRO-3 checkpoints resume in 2 processes and export in 1.

The 2-process runs are spawned with ``accelerate launch`` (about 20-40 s each on 2 shared cores; the first
DeepSpeed run of a machine also compiles a communication op, ~40 s, cached in ~/.cache/grpo/torch_extensions).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from grpo.config import GRPOArguments, parse_config
from grpo.distributed import configure_deepspeed
from grpo.model import TINY, resolve_model_path
from grpo.samplers.base import SamplingConfig
from grpo.samplers.replay import ReplaySampler, replay_text
from grpo.trainer import GRPOTrainer
from tests.conftest import ROOT, SMOKE_RECIPE

CONFIGS = os.path.join(ROOT, "accelerate_configs")
# Optimizer steps on fixed completions. adam_epsilon = 1 makes the first AdamW update ~ lr * g / (|g| + 1),
# i.e. sensitive to the gradient's scale (with a small epsilon it is ~ lr * sign(g), blind to a wrong scale);
# max_grad_norm 10 keeps clipping on but inactive (the gradient norm is ~2), for the same reason.
# A second step with the cosine schedule's half learning rate checks that DeepSpeed steps with grpo's schedule.
STEP_FLAGS = [
    "--sampler",
    "replay",
    "--max_steps",
    "2",
    "--lr_scheduler_type",
    "cosine",
    "--save_steps",
    "1",
    "--num_generations",
    "4",
    "--max_completion_length",
    "32",
    "--reward_funcs",
    "format",
    "repetition",
    "--loss_type",
    "dapo",
    "--beta",
    "0.04",
    "--learning_rate",
    "1.0",
    "--adam_epsilon",
    "1.0",
    "--max_grad_norm",
    "10",
    "--per_device_train_batch_size",
    "4",
]
# The same global batch: 4 prompts x 4 completions per optimizer step.
ONE_PROCESS = ["--gradient_accumulation_steps", "4"]
TWO_PROCESSES = ["--gradient_accumulation_steps", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: str, output_dir, *flags, processes: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file accelerate_configs/<config>.yaml scripts/train.py`` on the tiny recipe."""
    if config != "ddp":
        pytest.importorskip("deepspeed")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": ROOT,
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
    }
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/grpo/torch_extensions"))
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        os.path.join(CONFIGS, f"{config}.yaml"),
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(free_port()),
        os.path.join(ROOT, "scripts", "train.py"),
        "--config",
        SMOKE_RECIPE,
        "--output_dir",
        str(output_dir),
        *flags,
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def saved_weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(checkpoint, "model", "model.safetensors"))


def initial_weights() -> dict[str, torch.Tensor]:
    return load_file(os.path.join(resolve_model_path(TINY), "model.safetensors"))


def max_relative_difference(a: dict, b: dict, start: dict) -> float:
    """max |a - b| over max |a - start|: the mismatch of two updates, relative to the update's size."""
    assert set(a) == set(b)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    step = max(float((a[k] - start[k]).abs().max()) for k in a if k in start)
    assert step > 0
    return diff / step


@pytest.fixture(scope="module")
def one_process_step(tmp_path_factory):
    """The reference: one step in this process (no accelerate launch), its metrics and weights."""
    out = tmp_path_factory.mktemp("one")
    GRPOTrainer(*parse_config([SMOKE_RECIPE, "--output_dir", str(out), *STEP_FLAGS, *ONE_PROCESS])).train()
    return read_metrics(out), [saved_weights(out / f"checkpoint-{step}") for step in (1, 2)]


# --- fast checks, no launch ------------------------------------------------------------------------------


def test_replay_completions_depend_only_on_the_prompt(tokenizer, tiny_model):
    sampler = ReplaySampler(tiny_model, tokenizer, SamplingConfig(max_completion_length=32))
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    together = sampler.generate(prompts, 4)
    alone = sampler.generate(prompts[1:2], 4)
    assert together.completions[4:8] == alone.completions
    t = alone.completion_ids.shape[1]
    assert torch.equal(together.completion_ids[4:8, :t], alone.completion_ids)
    assert torch.equal(together.completion_mask[4:8, :t], alone.completion_mask)
    assert len(set(together.completions[:4])) == 4  # every template in a group of 4: rewards differ
    expected = []
    for prompt in prompts:
        for index in range(4):
            text, ends_with_eos = replay_text(prompt, index)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [sampler.eos_id] * ends_with_eos
            expected.append(min(len(ids), 32))
    assert together.completion_mask.sum(1).tolist() == expected


def test_deepspeed_settings_come_from_the_recipe():
    args = GRPOArguments(
        per_device_train_batch_size=4, gradient_accumulation_steps=2, max_grad_norm=0.5, num_generations=4
    )
    config = {"gradient_accumulation_steps": "auto", "zero_optimization": {"stage": 2}}
    configure_deepspeed(config, args)
    assert (
        config["train_micro_batch_size_per_gpu"],
        config["gradient_accumulation_steps"],
        config["gradient_clipping"],
    ) == (4, 2, 0.5)
    same = {"gradient_accumulation_steps": 2, "gradient_clipping": 0.5}
    configure_deepspeed(same, args)  # equal fixed values are accepted
    with pytest.raises(ValueError, match="gradient_clipping=1.0 but the recipe gives 0.5"):
        configure_deepspeed({"gradient_clipping": 1.0}, args)
    zero3 = {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False}}
    configure_deepspeed(zero3, args)
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]  # checkpoints gather


def test_negative_control_a_wrong_loss_scale_is_caught(tmp_path, one_process_step):
    """The step with the gradient halved (what forgetting to undo DDP's averaging over 2 processes does)
    differs from the reference by far more than the tolerance used below."""
    trainer = GRPOTrainer(*parse_config([SMOKE_RECIPE, "--output_dir", str(tmp_path), *STEP_FLAGS, *ONE_PROCESS]))
    backward = trainer.accelerator.backward
    trainer.accelerator.backward = lambda loss, **kw: backward(loss / 2, **kw)
    trainer.train()
    record, weights = read_metrics(tmp_path)[0], saved_weights(tmp_path / "checkpoint-1")
    reference_records, reference = one_process_step
    mismatch = max_relative_difference(weights, reference[0], initial_weights())
    print(f"negative control: weights differ by {mismatch:.3g} of the update")
    assert mismatch > 0.1
    assert record["grad_norm"] == pytest.approx(reference_records[0]["grad_norm"] / 2, rel=1e-4)


# --- 2 processes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config", ["zero3", *(pytest.param(c, marks=pytest.mark.slow) for c in ("zero2", "ddp", "zero3_offload"))]
)
def test_one_step_on_two_processes_equals_one_process(tmp_path, one_process_step, config):
    launch(config, tmp_path, *STEP_FLAGS, *TWO_PROCESSES)
    records = read_metrics(tmp_path)
    reference_records, reference = one_process_step
    start = initial_weights()
    for step, record in enumerate(records):
        assert record["num_processes"] == 2 and reference_records[step]["num_processes"] == 1
        for key in ("loss", "grad_norm", "reward", "completion_length/mean", "kl", "entropy"):
            assert record[key] == pytest.approx(reference_records[step][key], rel=1e-5, abs=1e-7), (step, key)
        mismatch = max_relative_difference(saved_weights(tmp_path / f"checkpoint-{step + 1}"), reference[step], start)
        print(f"{config} step {step + 1}: weights differ by {mismatch:.3g} of the update")
        assert mismatch < 1e-4
        start = reference[step]


@pytest.mark.slow
def test_zero3_lora_steps_equal_one_process(tmp_path):
    """LoRA under ZeRO-3: the adapter (gathered into ``adapter_model.safetensors``) and the KL to the
    reference (the policy with its adapter disabled, a partitioned forward) match one process."""
    one, two, lora = tmp_path / "one", tmp_path / "two", ["--use_peft", "true"]
    GRPOTrainer(*parse_config([SMOKE_RECIPE, "--output_dir", str(one), *STEP_FLAGS, *ONE_PROCESS, *lora])).train()
    launch("zero3", two, *STEP_FLAGS, *TWO_PROCESSES, *lora)
    for step, (record, expected) in enumerate(zip(read_metrics(two), read_metrics(one)), start=1):
        for key in ("loss", "grad_norm", "kl"):
            assert record[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), (step, key)
        got, want = (
            load_file(os.path.join(run, f"checkpoint-{step}", "model", "adapter_model.safetensors"))
            for run in (two, one)
        )
        assert set(got) == set(want) and any("lora_B" in k for k in got)
        size = max(float(want[k].abs().max()) for k in want if "lora_B" in k)  # B starts at 0: the update's size
        assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-5 * size
    assert read_metrics(two)[1]["kl"] > 0  # the adapter moved the policy away from the reference


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,flags",
    [("ddp", []), ("zero2", []), ("zero3", []), ("zero3", ["--use_peft", "true"])],
    ids=["ddp", "zero2", "zero3", "zero3-lora"],
)
def test_runs_with_the_hf_sampler_finish_on_two_processes(tmp_path, config, flags):
    """Real sampling (under ZeRO-3 from gathered weights), the reference model's log-probs (LoRA: the adapter
    disabled), checkpoints."""
    launch(
        config,
        tmp_path,
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        *flags,
    )
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["num_processes"] == 2 for r in records)
    # the random tiny model earns no reward (zero advantages), so this checks that the pieces run, not values
    assert all(torch.isfinite(torch.tensor([r["loss"], r["grad_norm"], r["kl"], r["entropy"]])).all() for r in records)
    assert all(r["completion_length/mean"] > 0 and r["time/sample_s"] > 0 for r in records)
    assert os.path.isdir(tmp_path / "checkpoint-2" / "model")


@pytest.mark.slow
def test_zero3_checkpoint_resumes_in_two_processes_and_exports_in_one(tmp_path):
    from transformers import AutoModelForCausalLM

    from grpo.export import export_checkpoint

    full, resumed, single = tmp_path / "full", tmp_path / "resumed", tmp_path / "single"
    flags = [*STEP_FLAGS, "--max_steps", "2", "--save_steps", "1", "--save_total_limit", "3"]
    launch("zero3", full, *flags, *TWO_PROCESSES)
    checkpoint = full / "checkpoint-1"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["num_processes"] == 2
    assert sorted(os.listdir(checkpoint / "deepspeed")) == [
        f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim")
    ]
    launch("zero3", resumed, *flags, *TWO_PROCESSES, "--resume_from_checkpoint", str(checkpoint))
    # with the optimizer partitions restored, the resumed step 2 is the uninterrupted step 2
    expected = saved_weights(full / "checkpoint-2")
    assert max_relative_difference(saved_weights(resumed / "checkpoint-2"), expected, saved_weights(checkpoint)) < 1e-5
    assert read_metrics(resumed)[0]["grad_norm"] == pytest.approx(read_metrics(full)[1]["grad_norm"], rel=1e-5)
    # one process, no DeepSpeed: the weights are restored, the optimizer state cannot be, and the step differs
    with pytest.warns(UserWarning, match="optimizer state starts from zero"):
        trainer = GRPOTrainer(
            *parse_config(
                [
                    SMOKE_RECIPE,
                    "--output_dir",
                    str(single),
                    *flags,
                    *ONE_PROCESS,
                    "--resume_from_checkpoint",
                    str(checkpoint),
                ]
            )
        )
    assert trainer.global_step == 1
    trainer.train()
    assert max_relative_difference(saved_weights(single / "checkpoint-2"), expected, saved_weights(checkpoint)) > 0.01
    # grpo export in one process: a plain transformers folder with the gathered weights
    exported = AutoModelForCausalLM.from_pretrained(export_checkpoint(str(full / "checkpoint-2"), str(tmp_path / "x")))
    state = exported.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())


@pytest.mark.slow
def test_zero3_samples_what_ddp_samples(tmp_path):
    """Generation from ZeRO-3's gathered weights draws the same completions as from DDP's replicas (same seed,
    same prompts per process), and the steps agree."""
    flags = [
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--num_completions_to_log",
        "4",
        "--max_completion_length",
        "24",
    ]
    for config in ("ddp", "zero3"):
        launch(config, tmp_path / config, *flags)
    texts = [
        [json.loads(line)["completion"] for line in (tmp_path / c / "completions.jsonl").read_text().splitlines()]
        for c in ("ddp", "zero3")
    ]
    assert len(texts[0]) == 8 and texts[0] == texts[1]
    for ddp, zero3 in zip(read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "zero3")):
        for key in ("completion_length/mean", "truncated_frac", "entropy", "loss", "grad_norm"):
            assert zero3[key] == pytest.approx(ddp[key], rel=1e-5, abs=1e-7), key
