"""A reward from a module outside the package, named in a recipe as ``module:function``, trains; a bad
entry stops the run with one line naming it. Per-reward time and timeouts reach metrics.jsonl."""

import json
import os
import sys

import pytest
import yaml

from grpo.config import parse_config
from grpo.trainer import GRPOTrainer
from tests.conftest import SMOKE_RECIPE

MODULE = '''
def brevity(completions, *, target: int = 10, **kwargs):
    """1.0 for a completion of at most `target` characters, falling linearly to 0 at twice that."""
    return [max(0.0, min(1.0, 2.0 - len(c) / target)) for c in completions]
'''


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    """The smoke recipe with ``my_team_rewards:brevity`` (written into tmp_path, put on sys.path) added."""
    (tmp_path / "my_team_rewards.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with open(SMOKE_RECIPE) as f:
        config = yaml.safe_load(f)
    config["reward_funcs"] = ["accuracy", "format", "my_team_rewards:brevity"]
    config["reward_kwargs"] = {"my_team_rewards:brevity": {"target": 20}}

    def write(**changes):
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({**config, **changes}))
        return str(path)

    yield write
    sys.modules.pop("my_team_rewards", None)


def test_a_recipe_naming_a_reward_outside_the_package_trains(recipe, tmp_path):
    out = tmp_path / "run"
    trainer = GRPOTrainer(*parse_config([recipe(), "--output_dir", str(out), "--max_steps", "2", "--save_steps", "0"]))
    assert trainer.reward_names == ["accuracy", "format", "brevity"]
    assert trainer.reward_funcs[2].reward_kwargs == {"target": 20}
    trainer.train()
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [1, 2]
    with open(os.path.join(out, "completions.jsonl")) as f:
        samples = [json.loads(line) for line in f]
    for s in samples:  # the logged reward is the module's own formula on the logged completion
        assert s["rewards/brevity"] == pytest.approx(max(0.0, min(1.0, 2.0 - len(s["completion"]) / 20)))
    for r in records:
        for name in ("accuracy", "format", "brevity"):
            assert r[f"rewards/{name}/time_s"] >= 0 and r[f"rewards/{name}/timeouts"] == 0
        assert 0.0 <= r["rewards/brevity"] <= 1.0


@pytest.mark.parametrize(
    "entry,message",
    [
        ("my_team_rewards:brevty", "reward 'my_team_rewards:brevty': module 'my_team_rewards' has no attribute"),
        ("not_installed_pkg.rewards:brevity", "reward 'not_installed_pkg.rewards:brevity': cannot import module"),
    ],
)
def test_a_bad_entry_in_a_recipe_fails_with_one_line_naming_it(recipe, tmp_path, entry, message):
    path = recipe(reward_funcs=["accuracy", entry], reward_kwargs={})
    with pytest.raises(ValueError, match=message) as e:
        GRPOTrainer(*parse_config([path, "--output_dir", str(tmp_path / "bad")]))
    assert "\n" not in str(e.value)
