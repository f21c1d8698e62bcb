"""``grpo pipeline``: stages run in order with their outputs wired, complete stages are skipped, a partly done
GRPO stage resumes from its checkpoint; ``grpo sft`` renders prompts exactly as GRPO does."""

import json
import os

import pytest
import yaml

from grpo.r1.pipeline import ARTEFACT, load_pipeline, resolve_stage, run_pipeline, stage_fields
from tests.test_cold_start import GSM8K_ROWS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = {"prompt_template": "chat", "system_prompt": "", "instruction": "Think, then answer.", "think_prefill": True}
TINY = {"model_name_or_path": "tiny-random-llama", "max_prompt_length": 256}


def _pipeline(tmp_path, stages, **extra) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "stages": stages, **extra}))
    return str(path)


def _fake_runner(calls):
    def runner(kind, recipe_path, folder):
        calls.append((kind, os.path.basename(folder), yaml.safe_load(open(recipe_path))))
        target = os.path.join(folder, ARTEFACT[kind])
        if ARTEFACT[kind] == "model":
            os.makedirs(target, exist_ok=True)
        else:
            open(target, "w").write("{}\n")

    return runner


STAGES = [
    {"name": "data", "kind": "cold_start"},
    {"name": "sft1", "kind": "sft"},
    {"name": "rl1", "kind": "grpo"},
    {"name": "samples", "kind": "sample", "overrides": {"num_samples": 3}},
    {"name": "sft2", "kind": "sft", "model_from": "base", "data_from": ["samples", "data"]},
    {"name": "rl2", "kind": "grpo"},
]


def test_wiring_order_and_skipping(tmp_path):
    path = _pipeline(tmp_path, STAGES, model_name_or_path="base-model", common={**PROMPT, "source_file": "x.jsonl"})
    calls = []
    assert run_pipeline(path, runner=_fake_runner(calls)) == [s["name"] for s in STAGES]
    recipes = {name: recipe for _, name, recipe in calls}
    run = str(tmp_path / "run")
    assert recipes["data"] == {"source_file": "x.jsonl", "output_dir": f"{run}/data"}  # common: only its fields
    assert recipes["sft1"]["model_name_or_path"] == "base-model"
    assert recipes["sft1"]["dataset_name"] == f"{run}/data/data.jsonl"
    assert recipes["rl1"]["model_name_or_path"] == f"{run}/sft1/model"
    assert recipes["samples"]["model_name_or_path"] == f"{run}/rl1/model" and recipes["samples"]["num_samples"] == 3
    assert recipes["sft2"]["model_name_or_path"] == "base-model"
    assert recipes["sft2"]["dataset_name"] == f"{run}/sft2/train_data.jsonl"
    assert open(recipes["sft2"]["dataset_name"]).read() == "{}\n{}\n"  # samples then cold-start rows
    assert recipes["rl2"]["model_name_or_path"] == f"{run}/sft2/model"
    for name in recipes:
        if "instruction" in stage_fields(calls[[c[1] for c in calls].index(name)][0]):
            assert {k: recipes[name][k] for k in PROMPT} == PROMPT
    # a rerun skips every complete stage
    again = []
    assert run_pipeline(path, runner=_fake_runner(again)) == [] and again == []
    # a stage without its DONE marker (interrupted) runs again, and only it
    os.remove(tmp_path / "run" / "rl1" / "DONE")
    assert run_pipeline(path, runner=_fake_runner(again)) == ["rl1"]
    # a DONE marker without the artefact does not count as complete
    import shutil

    shutil.rmtree(tmp_path / "run" / "sft2" / "model")
    assert run_pipeline(path, runner=_fake_runner(again)) == ["sft2"]


def test_a_stage_that_writes_no_artefact_is_not_marked_done(tmp_path):
    path = _pipeline(tmp_path, STAGES[:2])
    with pytest.raises(RuntimeError, match="without writing data.jsonl"):
        run_pipeline(path, runner=lambda kind, recipe, folder: None)
    assert not os.path.exists(tmp_path / "run" / "data" / "DONE")


@pytest.mark.parametrize(
    "stages, message",
    [
        ([{"name": "a", "kind": "train"}], "kind must be one of"),
        ([{"name": "a", "kind": "sft"}, {"name": "a", "kind": "grpo"}], "unique"),
        ([{"name": "a", "kind": "sft", "model_from": "later"}], "not an earlier stage"),
        (
            [{"name": "a", "kind": "cold_start"}, {"name": "b", "kind": "grpo", "model_from": "a"}],
            "does not make a model",
        ),
        ([{"name": "a", "kind": "grpo", "overrides": {"num_samples": 2}}], r"\['num_samples'\] are not fields"),
        ([{"name": "a", "kind": "grpo", "epochs": 2}], "unexpected keyword"),
    ],
)
def test_bad_pipelines(tmp_path, stages, message):
    with pytest.raises(ValueError, match=message):
        load_pipeline(_pipeline(tmp_path, stages))


def test_shipped_r1_recipe_resolves_with_one_prompt_template():
    """Every stage of recipes/smollm2/r1.yaml that renders prompts renders them the same way (SFT = GRPO)."""
    path = os.path.join(ROOT, "recipes", "smollm2", "r1.yaml")
    pipeline, stages = load_pipeline(path)
    assert [s.kind for s in stages] == ["cold_start", "sft", "grpo", "sample", "sft", "grpo"]
    templates = []
    for i, stage in enumerate(stages):
        if stage.kind in ("cold_start",) or isinstance(stage.data_from, list):
            continue  # the data-merging stage needs the earlier stages' files
        recipe = resolve_stage(pipeline, stages, i, os.path.dirname(path))
        templates.append(tuple(recipe.get(k) for k in PROMPT))
    assert len(set(templates)) == 1 and templates[0][0] == "chat"


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS * 4))
    return str(path)


def test_tiny_pipeline_end_to_end_and_grpo_resume(tmp_path, gsm8k_file, monkeypatch):
    """Real stages on the tiny model: every artefact appears; a GRPO stage cut after its first checkpoint resumes
    there and trains only the missing step."""
    grpo = {
        **TINY,
        **PROMPT,
        "dataset_name": gsm8k_file,
        "max_steps": 2,
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "max_completion_length": 8,
        "save_steps": 1,
        "save_total_limit": 3,
        "reward_funcs": ["accuracy", "format", "language_consistency"],
        "report_to": ["none"],
        "disable_tqdm": True,
    }
    sft = {**TINY, **PROMPT, "max_steps": 1, "per_device_train_batch_size": 2, "max_length": 256, "logging_steps": 1}
    stages = [
        {"name": "data", "kind": "cold_start", "overrides": {"source_file": gsm8k_file, "min_reasoning_words": 5}},
        {"name": "sft1", "kind": "sft", "overrides": sft},
        {"name": "rl1", "kind": "grpo", "overrides": grpo},
        {"name": "samples", "kind": "sample", "overrides": {**grpo, "num_samples": 2, "num_prompts": 2}},
        {"name": "sft2", "kind": "sft", "model_from": "base", "data_from": ["samples", "data"], "overrides": sft},
    ]
    path = _pipeline(tmp_path, stages)
    assert run_pipeline(path) == [s["name"] for s in stages]
    run = tmp_path / "run"
    assert len(open(run / "data" / "data.jsonl").readlines()) == 12
    for name in ("sft1", "rl1", "sft2"):
        from transformers import AutoModelForCausalLM

        assert AutoModelForCausalLM.from_pretrained(run / name / "model").config.num_hidden_layers == 2
    stats = json.load(open(run / "samples" / "stats.json"))["sources"]
    assert stats["all"]["completions"] == 4
    assert json.load(open(run / "rl1" / "DONE"))["kind"] == "grpo"

    # cut rl1 after its first checkpoint: the rerun resumes at step 1 and trains step 2 only
    import shutil

    from grpo.trainer import GRPOTrainer

    for name in ("DONE", "model", "checkpoint-2"):
        target = run / "rl1" / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    started_at, original = [], GRPOTrainer.train
    monkeypatch.setattr(GRPOTrainer, "train", lambda self: (started_at.append(self.global_step), original(self))[1])
    assert run_pipeline(path) == ["rl1"]
    assert started_at == [1]
    assert json.load(open(run / "rl1" / "checkpoint-2" / "trainer_state.json"))["global_step"] == 2
    assert (run / "rl1" / "model" / "config.json").is_file()


def test_launcher_starts_sft_and_grpo_stages_as_commands(tmp_path):
    import sys

    from grpo.r1.pipeline import launcher_runner

    fake = tmp_path / "fake_launch.py"
    fake.write_text(
        "import os, sys, json\nargs = sys.argv[1:]\n"
        "open(os.path.join(args[-1], 'argv.json'), 'w').write(json.dumps(args))\n"
        "os.makedirs(os.path.join(args[-1], 'model'), exist_ok=True)\n"
        "sys.exit(int(os.environ.get('FAIL', '0')))\n"
    )
    path = _pipeline(
        tmp_path,
        [{"name": "sft1", "kind": "sft", "overrides": {"dataset_name": "d.jsonl"}}, {"name": "rl1", "kind": "grpo"}],
    )
    assert run_pipeline(path, runner=launcher_runner(f"{sys.executable} {fake} --num_processes 8")) == ["sft1", "rl1"]
    folder = str(tmp_path / "run" / "rl1")
    assert json.load(open(os.path.join(folder, "argv.json"))) == [
        "--num_processes",
        "8",
        "-m",
        "grpo.r1.pipeline",
        "grpo",
        os.path.join(folder, "stage.yaml"),
        folder,
    ]
    os.environ["FAIL"] = "1"
    try:
        os.remove(os.path.join(folder, "DONE"))
        with pytest.raises(RuntimeError, match="failed"):
            run_pipeline(path, runner=launcher_runner(f"{sys.executable} {fake}"))
    finally:
        del os.environ["FAIL"]
    assert not os.path.exists(os.path.join(folder, "DONE"))
