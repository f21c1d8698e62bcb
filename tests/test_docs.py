"""The documentation works as written: every shell command in README.md, docs/*.md and benchmarks/README.md
parses (tests/command_check.py), and every link, repository path and Python name they mention exists
(tests/docs_check.py). Failures name file:line.

Commands are parsed, never run. They come from fenced ```bash blocks (every line), ```console blocks (lines
after ``$ ``) and inline code in prose that starts like a command (``grpo train ...``).
"""

import glob
import os
import shlex

import pytest

from tests.command_check import command_errors
from tests.docs_check import (
    DOC_FILES,
    ROOT,
    architecture_map,
    doc_commands,
    fenced_blocks,
    inline_reference_errors,
    link_errors,
    python_name_errors,
    read,
)


def test_docs_have_commands():
    """The extraction finds the commands (a broken extractor would pass every other test vacuously)."""
    commands = [c for p in DOC_FILES for c in doc_commands(p)]
    assert len(commands) > 60
    assert any(c.tokens[:2] == ("grpo", "pipeline") for c in commands)
    assert any(c.tokens[0] == "accelerate" for c in commands)


@pytest.mark.parametrize("path", DOC_FILES)
def test_commands_parse(path):
    errors = [f"{c.where}: {' '.join(c.tokens)}\n    {e}" for c in doc_commands(path) for e in command_errors(c.tokens)]
    assert not errors, "commands that would not run as written:\n" + "\n".join(errors)


@pytest.mark.parametrize("path", DOC_FILES)
def test_links_and_references_exist(path):
    errors = link_errors(path) + inline_reference_errors(path)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", DOC_FILES)
def test_code_blocks_name_their_language(path):
    """An unlabelled block would hide commands from the checks: write ```bash, ```text, ```python, ..."""
    text = read(path)
    unlabelled = [f"{path}:{start - 1}" for lang, start, _ in fenced_blocks(text) if not lang]
    assert not unlabelled, f"code blocks without a language: {unlabelled}"


def test_every_docs_page_is_linked_from_the_readme():
    readme = read("README.md")
    pages = [p for p in DOC_FILES if p.startswith("docs/")]
    assert pages
    assert not [p for p in pages if f"]({p})" not in readme], "docs pages missing from the README's Documentation table"


def test_every_docs_page_opens_with_a_title_and_a_paragraph():
    for path in (p for p in DOC_FILES if p.startswith("docs/")):
        lines = read(path).split("\n")
        assert lines[0].startswith("# ") and not lines[1] and lines[2] and not lines[2].startswith(("#", "|", "`")), (
            path
        )


def test_architecture_map_matches_the_tree():
    """Every file of the map exists, and every module of grpo/ is on the map."""
    paths = architecture_map()
    absent = [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
    assert not absent, f"entries of the README's architecture map that do not exist: {absent}"
    modules = {
        os.path.relpath(p, ROOT)
        for p in glob.glob(f"{ROOT}/grpo/**/*.py", recursive=True)
        if not p.endswith("__init__.py")
    }
    missing = sorted(modules - set(paths))
    assert not missing, f"modules missing from the README's architecture map: {missing}"


def test_checker_catches_bad_commands():
    """Negative control: an unknown flag and a missing recipe (alone and together), an unknown subcommand,
    unknown or abbreviated eval options, a missing script, module or accelerate config, a bad pip extra and a
    stale Python name are each reported, and the correct forms are not."""
    assert command_errors(["grpo", "train", "recipes/tiny/smoke.yaml", "--max_steps", "2"]) == []
    (error,) = command_errors(["grpo", "train", "recipes/tiny/smoke.yaml", "--max_stepz", "2"])
    assert error.startswith("unknown flag --max_stepz (not a field of ModelArguments, DataArguments, GRPOArguments")
    assert command_errors(["grpo", "train", "recipes/tiny/smok.yaml"]) == ["recipes/tiny/smok.yaml: no such file"]
    both = command_errors(shlex.split("grpo sft recipes/smollm2/r1_sft.yam --learning_rat 1e-5"))
    assert len(both) == 2 and "r1_sft.yam: no such file" in both[0] and "--learning_rat" in both[1]
    assert "--num_samples" in command_errors(["grpo", "sft", "recipes/smollm2/r1_sft.yaml", "--num_samples", "4"])[0]
    assert "unknown subcommand" in command_errors(["grpo", "evaluate", "RECIPE.yaml"])[0]
    assert command_errors(["grpo", "eval", "--model", "PATH", "--benchmarks", "gsm8k", "--num_sample", "2"])
    assert command_errors(["grpo", "eval", "RECIPE.yaml", "--model", "PATH", "--heldout_frm", "x"])
    assert command_errors(["grpo", "eval", "RECIPE.yaml", "--model", "PATH", "--heldout_from", "x"]) == []
    assert command_errors(["grpo", "pipeline", "recipes/smollm2/r1.yaml", "--skip", "a"])
    assert command_errors(["grpo", "export", "outputs/x/checkpoint-1"])  # missing OUT_DIR
    assert command_errors(["python", "grpo/evaluate.py"]) == ["grpo/evaluate.py: no such file"]
    assert command_errors(["python", "-m", "grpo.pipeline"]) == ["no module grpo.pipeline"]
    assert command_errors(["bash", "scripts/setup.sh", "--vllm-gpu"]) == ["scripts/setup.sh has no option --vllm-gpu"]
    launch = "accelerate launch --config_file accelerate_configs/zero4.yaml scripts/train.py --config RECIPE.yaml"
    assert any("zero4.yaml" in e for e in command_errors(shlex.split(launch)))
    (error,) = command_errors(shlex.split(launch.replace("zero4", "zero3") + " --lr 1"))
    assert error.startswith("unknown flag --lr (not a field of ModelArguments")
    assert command_errors(shlex.split('pip install -c constraint.txt -e ".[deepspeed,gpu]"')) == [
        "constraint.txt: no such file",
        "no extra [gpu] in pyproject.toml",
    ]
    assert command_errors(["python", "scripts/compare_evals.py", "OUT_DIR", "--labels", "a"]) == []
    assert command_errors(["cat", "benchmarks/READMEE.md"])[0] == "benchmarks/READMEE.md: no such file"
    assert python_name_errors("grpo.eval.metrics.pass_at_k") == []
    assert python_name_errors("grpo.metrics.pass_at_k")


def test_link_checker_catches_dead_links_and_anchors():
    text = "# Top\n\n## Two words\n\n[a](#two-words) [b](#three) [c](docs/vllm.md#install) [d](docs/vlm.md) [e](https://x.org)\n"
    assert link_errors("README.md", text) == [
        "README.md:5: link to #three: no heading #three in README.md",
        "README.md:5: link to docs/vlm.md: no such file",
    ]


def test_extraction_reads_blocks_continuations_and_inline_commands():
    text = (
        "Run `grpo train RECIPE.yaml --max_steps 2` or see `grpo/cli.py`.\n\n"
        "```bash\n# a comment\nOUT=x bash scripts/setup.sh && grpo eval --model PATH \\\n    --benchmarks gsm8k  # note\n```\n\n"
        "```console\n$ grpo score f.jsonl --rewards accuracy\nreward  mean\n```\n\n"
        "```text\ngrpo not-a-command\n```\n"
    )
    got = [(c.where, c.tokens) for c in doc_commands("doc.md", text)]
    assert got == [
        ("doc.md:5", ("bash", "scripts/setup.sh")),
        ("doc.md:5", ("grpo", "eval", "--model", "PATH", "--benchmarks", "gsm8k")),
        ("doc.md:10", ("grpo", "score", "f.jsonl", "--rewards", "accuracy")),
        ("doc.md:1", ("grpo", "train", "RECIPE.yaml", "--max_steps", "2")),
    ]


def test_architecture_map_reads_the_tree():
    readme = (
        "# x\n\n## Architecture\n\n```text\ngrpo/\n  cli.py     dispatch\n  algo/      pure torch\n"
        "    loss.py  the loss\n             -> a continued description\n  io.py      writers\nrewards/   rewards\n```\n"
    )
    assert architecture_map(readme) == [
        "grpo/",
        "grpo/cli.py",
        "grpo/algo/",
        "grpo/algo/loss.py",
        "grpo/io.py",
        "rewards/",
    ]
