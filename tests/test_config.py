import pytest
import torch
import yaml

from grpo.config import GRPOArguments, VLLMArguments, load_config, parse_config, save_config
from tests.conftest import SMOKE_RECIPE


def test_recipe_then_flags_override(tmp_path):
    model, data, args, _ = parse_config([SMOKE_RECIPE, "--learning_rate", "1e-6", "--output_dir", str(tmp_path)])
    with open(SMOKE_RECIPE) as f:
        recipe = yaml.safe_load(f)
    assert args.learning_rate == 1e-6  # flag beats recipe
    assert args.num_generations == recipe["num_generations"]  # recipe beats default
    assert model.model_name_or_path == recipe["model_name_or_path"]
    assert data.reasoning_gym_kwargs == recipe["reasoning_gym_kwargs"]


def test_config_flag_form_and_json_dict(tmp_path):
    _, data, args, _ = parse_config(["--config", SMOKE_RECIPE, "--reward_kwargs", '{"format": {"strict": false}}'])
    assert args.reward_kwargs == {"format": {"strict": False}}


def test_generation_batch_must_hold_whole_groups():
    with pytest.raises(ValueError, match="not divisible by num_generations"):
        GRPOArguments(num_generations=3, per_device_train_batch_size=4, gradient_accumulation_steps=1)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("loss_type", "ppo", "loss_type"),
        ("kl_estimator", "k4", "kl_estimator"),
        ("scale_rewards", "std", "scale_rewards"),
        ("num_generations", 1, "num_generations"),
        ("temperature", 0.0, "temperature"),
        ("report_to", ["mlflow"], "report_to"),
    ],
)
def test_bad_values_raise_clear_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        GRPOArguments(**{field: value})


def test_reward_weights_must_match_rewards():
    with pytest.raises(ValueError, match="reward_weights"):
        GRPOArguments(reward_funcs=["accuracy", "format"], reward_weights=[1.0])


def test_unknown_recipe_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1.0\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_config([str(bad)])


def test_saved_config_round_trips(tmp_path):
    configs = parse_config([SMOKE_RECIPE, "--vllm_kv_cache_gb", "0.5", "--vllm_enforce_eager", "true"])
    assert configs[3] == VLLMArguments(vllm_kv_cache_gb=0.5, vllm_enforce_eager=True)
    assert not any(name.startswith("vllm_") for name in vars(configs[2]))  # GRPOArguments holds no engine setting
    save_config(str(tmp_path / "c.yaml"), *configs)
    with open(tmp_path / "c.yaml") as f:
        assert yaml.safe_load(f)["vllm"]["vllm_kv_cache_gb"] == 0.5
    assert load_config(str(tmp_path / "c.yaml")) == configs
    # a config.yaml written before the vllm section existed still loads, with the engine defaults
    old = yaml.safe_load(open(tmp_path / "c.yaml"))
    del old["vllm"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    assert load_config(str(tmp_path / "old.yaml")) == (*configs[:3], VLLMArguments())


def test_vllm_keys_in_one_recipe_with_the_rest(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: 3\nsampler: vllm\nvllm_tensor_parallel_size: 2\nvllm_dtype: float32\n")
    _, _, args, vllm = parse_config([str(recipe)])
    assert (args.max_steps, args.sampler, vllm.vllm_tensor_parallel_size, vllm.vllm_dtype) == (3, "vllm", 2, "float32")
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization"):
        VLLMArguments(vllm_gpu_memory_utilization=1.5)


@pytest.mark.parametrize("gpu_bf16", [False, True])
def test_auto_precision_means_one_thing_everywhere(monkeypatch, gpu_bf16, tiny_model):
    """mixed_precision, grpo eval --dtype and vllm_dtype resolve `auto` alike: bf16 on a bf16 GPU, else fp32."""
    from grpo.eval.cli import _dtype
    from grpo.model import resolve_mixed_precision
    from grpo.samplers.vllm import engine_kwargs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: gpu_bf16)
    want = torch.bfloat16 if gpu_bf16 else torch.float32
    assert resolve_mixed_precision("auto") == ("bf16" if gpu_bf16 else "no")
    assert _dtype("auto") == want
    assert engine_kwargs(tiny_model, VLLMArguments())["dtype"] == str(want).removeprefix("torch.")
    assert resolve_mixed_precision("fp16") == "fp16" and _dtype("float16") == torch.float16


@pytest.mark.parametrize(
    "field, registry",
    [
        ("loss_type", "grpo.algo.loss:LOSS_TYPES"),
        ("scale_rewards", "grpo.algo.advantages:SCALES"),
        ("kl_estimator", "grpo.algo.loss:KL_ESTIMATORS"),
        ("tis_level", "grpo.algo.mismatch:TIS_LEVELS"),
        ("sampler", "grpo.samplers.base:SAMPLERS"),
    ],
)
def test_choices_are_the_registries(field, registry):
    """Every registered name is accepted by the configuration, and nothing else."""
    import importlib

    module, name = registry.split(":")
    names = list(getattr(importlib.import_module(module), name))
    assert len(names) >= 2
    for value in names:
        assert getattr(GRPOArguments(**{field: value}), field) == value
    with pytest.raises(ValueError, match=field):
        GRPOArguments(**{field: "not_registered"})


def test_top_entropy_quantile_one_rule_in_config_and_loss():
    from grpo.algo.loss import LossSettings, policy_loss

    logp, mask, ents = torch.zeros(1, 3), torch.ones(1, 3), torch.tensor([[0.1, 0.2, 0.3]])
    for rho in (0.0, 0.5, 1.0):
        assert GRPOArguments(top_entropy_quantile=rho).top_entropy_quantile == rho
        policy_loss(logp, None, torch.ones(1), mask, LossSettings(top_entropy_quantile=rho), entropies=ents)
    for rho in (-0.1, 1.1):
        with pytest.raises(ValueError, match="top_entropy_quantile"):
            GRPOArguments(top_entropy_quantile=rho)
        with pytest.raises(ValueError, match="top_entropy_quantile"):
            policy_loss(logp, None, torch.ones(1), mask, LossSettings(top_entropy_quantile=rho), entropies=ents)


def test_bad_field_exits_2_with_one_line_and_no_traceback(tmp_path, capsys):
    """`grpo train` as a user runs it (a process of its own): a value the checks refuse; then, in this process,
    a missing recipe and unparsable YAML."""
    import subprocess
    import sys

    from grpo.cli import main
    from tests.conftest import ROOT

    run = subprocess.run(
        [sys.executable, "-m", "grpo.cli", "train", SMOKE_RECIPE, "--num_generations", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert lines == ["grpo train: error: num_generations must be >= 2: a group of one has no relative advantage"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("reward_funcs: [accuracy\n")
    for path in (tmp_path / "missing.yaml", broken):
        assert main(["train", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("grpo train: error: ") and path.name in err and "\n" not in err


def test_config_errors_of_other_recipe_commands_exit_2(tmp_path, capsys):
    from grpo.cli import main

    sft = tmp_path / "sft.yaml"
    sft.write_text("model_name_or_path: tiny-random-llama\nmax_length: 0\n")
    for command, argv, named in [
        ("sample", [SMOKE_RECIPE, "--num_samples", "0"], "num_samples"),
        ("sft", [str(sft)], "max_length"),
        ("eval", [SMOKE_RECIPE, "--vllm_gpu_memory_utilization", "2"], "vllm_gpu_memory_utilization"),
    ]:
        assert main([command, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"grpo {command}: error: ") and named in err and "\n" not in err
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("output_dir: x\nstages: [{name: a, kind: nope}]\n")
    assert main(["pipeline", str(pipeline)]) == 2
    assert "kind must be one of" in capsys.readouterr().err
