"""Registry contract: names, binding, errors, and the calling convention of every reward."""

import ast
import inspect
import os
import pkgutil
import subprocess
import sys

import pytest

import rewards
from rewards import REWARDS, get_reward_funcs, register_reward
from tests.conftest import ROOT

EXPECTED = {
    "accuracy",
    "format",
    "tag_count",
    "language_consistency",
    "cosine",
    "soft_overlong",
    "length",
    "repetition",
    "reasoning_gym",
}
GOOD = "<think>\nadd them\n</think>\n<answer>\n4\n</answer>"
LENIENT_ONLY = "<think>add them</think> <answer>4</answer>"


@pytest.fixture
def scratch_name():
    name = "test_scratch_reward"
    yield name
    REWARDS.pop(name, None)


def test_all_names_registered():
    assert EXPECTED <= set(REWARDS)


def test_exports():
    for attr in (
        "register_reward",
        "get_reward_funcs",
        "REWARDS",
        "accuracy_reward",
        "format_reward",
        "detect_think_prefill",
        "cosine_reward",
        "soft_overlong_reward",
        "length_reward",
        "repetition_reward",
        "reasoning_gym_reward",
        "language_consistency_reward",
        "tag_count_reward",
    ):
        assert hasattr(rewards, attr), attr
    assert REWARDS["accuracy"] is rewards.accuracy_reward
    assert REWARDS["format"] is rewards.format_reward


def test_duplicate_name_raises(scratch_name):
    @register_reward(scratch_name)
    def first(completions, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="already registered"):

        @register_reward(scratch_name)
        def second(completions, **kwargs):
            return [1.0] * len(completions)

    assert REWARDS[scratch_name] is first


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="available") as e:
        get_reward_funcs(["accuracy", "nope"])
    assert "'nope'" in str(e.value) and "format" in str(e.value) and "cosine" in str(e.value)


def test_kwargs_for_name_not_chosen_raises():
    with pytest.raises(ValueError, match="cosine"):
        get_reward_funcs(["accuracy"], {"cosine": {"max_len": 10}})


def test_unknown_setting_raises():
    with pytest.raises(ValueError, match="max_lenn"):
        get_reward_funcs(["cosine"], {"cosine": {"max_lenn": 10}})


def test_required_setting_missing_raises():
    with pytest.raises(ValueError, match="num_generations"):
        get_reward_funcs(["length"])
    with pytest.raises(ValueError, match="max_completion_length"):
        get_reward_funcs(["soft_overlong"])


def test_names_must_be_a_list_and_unique():
    with pytest.raises(TypeError):
        get_reward_funcs("accuracy")
    with pytest.raises(ValueError, match="more than once"):
        get_reward_funcs(["format", "format"])


def test_names_and_binding():
    funcs = get_reward_funcs(["format", "tag_count", "repetition"], {"format": {"strict": False}})
    assert [f.__name__ for f in funcs] == ["format", "tag_count", "repetition"]
    lenient_format = funcs[0]
    assert lenient_format([LENIENT_ONLY, "no tags"]) == [1.0, 0.0]
    (strict_format,) = get_reward_funcs(["format"])
    assert strict_format([LENIENT_ONLY, GOOD]) == [0.0, 1.0]
    assert lenient_format.reward_kwargs == {"strict": False}


def test_bound_setting_wins_over_a_same_named_column():
    (f,) = get_reward_funcs(["format"], {"format": {"strict": False}})
    # A dataset column called "strict" must not replace the setting.
    assert f([LENIENT_ONLY], strict=[True]) == [1.0]


def test_bound_kwargs_reach_the_function():
    (f,) = get_reward_funcs(["repetition"], {"repetition": {"ngram_size": 1, "max_penalty": -2.0}})
    # words a a b: unigrams 3, unique 2 -> (1 - 2/3) * -2
    assert f(["a a b"]) == [pytest.approx(-2.0 / 3.0)]


def _columns(n):
    return {
        "prompts": ["What is 2+2?"] * n,
        "completion_ids": [[1, 2, 3]] * n,
        "truncated": [False] * n,
        "solution": ["4"] * n,
        "reasoning_gym_entry": [None] * n,
        "trainer_state": object(),
        "some_unknown_column": ["x"] * n,
    }


REQUIRED = {"length": {"num_generations": 2}, "soft_overlong": {"max_completion_length": 10}}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_reward_takes_trl_columns_and_ignores_unknown(name):
    (f,) = get_reward_funcs([name], {name: REQUIRED[name]} if name in REQUIRED else None)
    completions = [GOOD, "", "<think>\n5\n</think>\n<answer>\n5\n</answer>", "日本語 ünïcödé \x00"]
    out = f(completions=completions, **_columns(len(completions)))
    assert isinstance(out, list) and len(out) == len(completions)
    assert all(v is None or isinstance(v, float) for v in out)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_settings_are_keyword_only_and_documented(name):
    func = REWARDS[name]
    params = inspect.signature(func).parameters
    assert list(params)[0] == "completions"
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    doc = inspect.getdoc(func)
    assert doc and "Returns" in doc and "Args" in doc


def test_rewards_never_import_grpo():
    # rewards/ is a library of its own: importing it, or any of its modules, loads nothing of grpo
    modules = ["rewards"] + [f"rewards.{m.name}" for m in pkgutil.iter_modules(rewards.__path__)]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'grpo' or m.startswith('grpo.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert len(modules) > 10  # every module was tried


def grpo_imports(source: str) -> list[int]:
    """Line numbers of the import statements of ``source`` that name grpo, at any depth (lazy ones too)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(n == "grpo" or n.startswith("grpo.") for n in names):
            lines.append(node.lineno)
    return lines


def test_no_rewards_source_imports_grpo_even_inside_a_function():
    assert grpo_imports("def f():\n    from grpo.io import read_jsonl\n") == [2]  # the check can fail
    folder = os.path.join(ROOT, "rewards")
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                if lines := grpo_imports(f.read()):
                    found[name] = lines
    assert not found
