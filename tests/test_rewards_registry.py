"""Registry contract: names, binding, errors, and the calling convention of every reward."""

import ast
import inspect
import multiprocessing
import os
import pickle
import pkgutil
import re
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


# --- settings checked when built ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"repetition": {"max_penalty": 1.0}}, "reward 'repetition': max_penalty must be <= 0"),
        ({"repetition": {"ngram_size": 0}}, "ngram_size must be >= 1"),
        ({"cosine": {"max_len": 0}}, "reward 'cosine': max_len must be > 0"),
        ({"cosine": {"max_len": "100"}}, "setting max_len must be int, got '100'"),
        ({"cosine": {"exceed_length_penalty": "low"}}, "exceed_length_penalty must be float or None"),
        ({"format": {"strict": "no"}}, "setting strict must be bool"),
        ({"language_consistency": {"target_language": "xx"}}, "unsupported target_language 'xx'"),
        ({"soft_overlong": {"max_completion_length": 10, "cache_length": 20}}, "cache_length must be in"),
        ({"accuracy": {"timeout_seconds": 0}}, "timeout_seconds must be > 0"),
        ({"accuracy": {"batch_timeout_seconds": -1}}, "batch_timeout_seconds must be > 0"),
        ({"length": {"num_generations": 0}}, "num_generations must be >= 1"),
        ({"reasoning_gym": {"timeout_seconds": True}}, "timeout_seconds must be float"),
        ({"cosine": 5}, "must be a mapping"),
    ],
)
def test_bad_settings_fail_when_built_with_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        get_reward_funcs(list(kwargs), kwargs)
    assert "\n" not in str(e.value)


def test_good_settings_are_accepted_ints_for_floats_included():
    funcs = get_reward_funcs(
        ["cosine", "repetition", "soft_overlong"],
        {"cosine": {"max_len": 64, "min_value_wrong": -1}, "soft_overlong": {"max_completion_length": 8}},
    )
    assert [f.reward_kwargs for f in funcs] == [
        {"max_len": 64, "min_value_wrong": -1},
        {},
        {"max_completion_length": 8},
    ]


# --- picklable ---------------------------------------------------------------------------------------------

BATCH = {
    "completions": ["<think>\nsum\n</think>\n<answer>\n4\n</answer>", "\\boxed{5} the the the the", "日本語"],
    "solution": ["4", "4", "4"],
    "completion_ids": [[1, 2, 3], [1] * 20, [1]],
}
SETTINGS = {
    "length": {"num_generations": 3},
    "soft_overlong": {"max_completion_length": 16},
    "cosine": {"max_len": 32},
    "format": {"strict": False},
}


def built_rewards():
    names = sorted(EXPECTED - {"reasoning_gym"})
    return get_reward_funcs(names, {n: SETTINGS[n] for n in names if n in SETTINGS})


def _score_in_child(funcs, queue):
    queue.put([(f.__name__, f(**BATCH)) for f in funcs])


def test_built_rewards_survive_pickle_and_a_spawned_process():
    funcs = built_rewards()
    expected = [(f.__name__, f(**BATCH)) for f in funcs]
    copies = pickle.loads(pickle.dumps(funcs))
    assert [(f.__name__, f.reward_kwargs) for f in copies] == [(f.__name__, f.reward_kwargs) for f in funcs]
    assert [(f.__name__, f(**BATCH)) for f in copies] == expected
    ctx = multiprocessing.get_context("spawn")  # what trl's async trainer does: nothing inherited
    queue = ctx.Queue()
    proc = ctx.Process(target=_score_in_child, args=(funcs, queue))
    proc.start()
    got = queue.get(timeout=240)
    proc.join(60)
    assert proc.exitcode == 0 and got == expected
    assert {name for name, _ in got} == EXPECTED - {"reasoning_gym"}


# --- rewards outside the package: "module.path:function" ---------------------------------------------------

CUSTOM = '''
def brevity(completions, *, target: int = 10, **kwargs):
    """1.0 for a completion of at most `target` characters, falling linearly to 0 at twice that."""
    return [max(0.0, min(1.0, 2.0 - len(c) / target)) for c in completions]

NOT_CALLABLE = 3
'''


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    (tmp_path / "my_custom_rewards.py").write_text(CUSTOM)
    (tmp_path / "broken_rewards.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_custom_rewards"
    for name in ("my_custom_rewards", "broken_rewards"):
        sys.modules.pop(name, None)


def test_a_reward_by_import_path_is_named_after_its_function_and_takes_its_settings(custom_module):
    (f,) = get_reward_funcs([f"{custom_module}:brevity"], {f"{custom_module}:brevity": {"target": 2}})
    assert f.__name__ == "brevity" and f.reward_kwargs == {"target": 2}
    assert f(["ab", "abc", "abcd", "abcdefgh"]) == [1.0, 0.5, 0.0, 0.0]
    assert pickle.loads(pickle.dumps(f))(["abc"]) == [0.5]
    with pytest.raises(ValueError, match="reward 'brevity' has no setting"):
        get_reward_funcs([f"{custom_module}:brevity"], {f"{custom_module}:brevity": {"targt": 2}})
    with pytest.raises(ValueError, match="setting target must be int"):
        get_reward_funcs([f"{custom_module}:brevity"], {f"{custom_module}:brevity": {"target": "2"}})


@pytest.mark.parametrize(
    "entry,message",
    [
        ("no_such_package_xyz.rewards:brevity", "cannot import module 'no_such_package_xyz.rewards' (ModuleNotFound"),
        ("broken_rewards:f", "cannot import module 'broken_rewards' (SyntaxError"),
        ("my_custom_rewards:nope", "module 'my_custom_rewards' has no attribute 'nope'"),
        ("my_custom_rewards:NOT_CALLABLE", "my_custom_rewards.NOT_CALLABLE is a int, not callable"),
        ("nope", "unknown reward 'nope'"),
    ],
)
def test_a_bad_reward_entry_gives_one_line_naming_it(custom_module, entry, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        get_reward_funcs([entry])
    assert "\n" not in str(e.value) and entry in str(e.value)
