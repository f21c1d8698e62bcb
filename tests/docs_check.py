"""Reading the project's Markdown documents: fenced blocks, prose, the shell commands written in them, relative
links, inline references to repository files and Python names, and the README's architecture map.

Used by ``tests/test_docs.py``; the checks of one command are in ``tests/command_check.py``.
"""

from __future__ import annotations

import ast
import glob
import importlib
import os
import re
import shlex
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = [
    "README.md",
    "benchmarks/README.md",
    *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/docs/*.md")),
]
# Entries at the repository root: an argument or inline path starting with one of them names a repository file.
REPO_ENTRIES = {e for e in os.listdir(ROOT) if e not in {".git", ".venv", "outputs", "__pycache__"}}
FENCE = re.compile(r"^(\s*)```(.*)$")


@dataclass(frozen=True)
class Command:
    """One shell command of a document: where it is written and its tokens (comments and ``$ `` removed)."""

    where: str  # "file:line"
    tokens: tuple[str, ...]


# --- extraction ------------------------------------------------------------------------------------------


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """``(language, line number of the first content line, lines)`` of every fenced code block."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            start, lang, i = i + 2, m.group(2).strip(), i + 1
            body = []
            while i < len(lines) and not FENCE.match(lines[i]):
                body.append(lines[i])
                i += 1
            blocks.append((lang, start, body))
        i += 1
    return blocks


def prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line outside fenced code blocks."""
    out, inside = [], False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            out.append((n, line))
    return out


def split_commands(line: str, where: str) -> list[Command]:
    """The commands of one shell line: comments dropped, split at ``&&``, ``||``, ``;`` and ``|``; leading
    ``NAME=value`` environment settings dropped."""
    commands, current = [], []
    for token in [*shlex.split(line, comments=True), "&&"]:
        if token in ("&&", "||", ";", "|"):
            while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", current[0]):
                current.pop(0)
            if current:
                commands.append(Command(where, tuple(current)))
            current = []
        else:
            current.append(token)
    return commands


INLINE_COMMAND = re.compile(r"^(grpo |\.venv/bin/|python |python3 |bash scripts/|accelerate launch |pip install )")


def read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def doc_commands(path: str, text: str | None = None) -> list[Command]:
    """Every shell command written in the document ``path`` (relative to the repository root; ``text``: its
    content, read from the file by default)."""
    text = read(path) if text is None else text
    commands = []
    for lang, start, body in fenced_blocks(text):
        if lang not in ("bash", "sh", "console"):
            continue
        n = 0
        while n < len(body):  # join lines continued with a backslash
            first, line = n, body[n]
            while line.endswith("\\") and n + 1 < len(body):
                n += 1
                line = line[:-1] + " " + body[n].strip()
            n += 1
            if lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            commands += split_commands(line, f"{path}:{start + first}")
    for n, line in prose_lines(text):
        for span in re.findall(r"`([^`]+)`", line):
            if INLINE_COMMAND.match(span):
                # A bare `grpo sample` names the subcommand: checked as `grpo sample --help`.
                span += " --help" if re.fullmatch(r"grpo \w+", span) else ""
                commands += split_commands(span, f"{path}:{n}")
    return commands


def anchors(path: str, text: str | None = None) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file: lower case, punctuation dropped, spaces to hyphens."""
    text = read(path) if text is None else text
    return {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for _, line in prose_lines(text)
        if re.match(r"#{1,6} ", line)
    }


def link_errors(path: str, text: str | None = None) -> list[str]:
    """Relative links and images of ``path`` (``text``: its content) that point to no file, or to no heading."""
    errors = []
    for n, line in prose_lines(read(path) if text is None else text):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            if not os.path.exists(os.path.join(ROOT, linked)):
                errors.append(f"{path}:{n}: link to {target}: no such file")
            elif anchor and linked.endswith(".md") and anchor not in anchors(linked, text if linked == path else None):
                errors.append(f"{path}:{n}: link to {target}: no heading #{anchor} in {linked}")
    return errors


def expand_braces(path: str) -> list[str]:
    """``recipes/a/{x,y}.yaml`` -> ``recipes/a/x.yaml``, ``recipes/a/y.yaml``."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in expand_braces(path[: m.start()] + alt + path[m.end() :])]


def python_name_errors(name: str) -> list[str]:
    """``grpo.eval.metrics.pass_at_k``: the longest importable module prefix, then attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return [f"{name}: {module} has no {'.'.join(parts[i:])}"]
            obj = getattr(obj, attr)
        return []
    return [f"{name}: no such module"]


def inline_reference_errors(path: str) -> list[str]:
    """Inline code in prose naming a repository file (``grpo/algo/loss.py``) or a Python name of ours
    (``grpo.eval.benchmarks.load_benchmarks(...)``), and imports in ```python blocks: each must exist."""
    text, errors = read(path), []
    for n, line in prose_lines(text):
        for span in re.findall(r"`([^`]+)`", line):
            # a file (`grpo/algo/loss.py`) or folder (`grpo/eval/`), not a metric name such as `rewards/accuracy`
            if re.fullmatch(r"[^\s]*/[^\s/]*\.[^\s/]+|[^\s]+/", span) or span in REPO_ENTRIES:
                errors += [f"{path}:{n}: {e}" for p in expand_braces(span) for e in repo_path_errors(p)]
            m = re.match(r"(grpo|rewards)(\.\w+)+", span)
            if m:
                errors += [f"{path}:{n}: {e}" for e in python_name_errors(m.group(0))]
    for lang, start, body in fenced_blocks(text):
        if lang != "python":
            continue
        for node in ast.walk(ast.parse("\n".join(body))):
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            errors += [f"{path}:{start + node.lineno - 1}: {e}" for name in names for e in python_name_errors(name)]
    return errors


def architecture_map(readme: str | None = None) -> list[str]:
    """The file paths of the README's architecture map (the first ```text block under "## Architecture"),
    built from the tree's indentation."""
    readme = read("README.md") if readme is None else readme
    section = readme[readme.index("\n## Architecture") :]
    lang, _, body = fenced_blocks(section)[0]
    assert lang == "text"
    paths, stack = [], []  # stack: (indent, folder)
    for line in body:
        m = re.match(r"( *)(\S+)", line)
        if not m or not re.search(r"(/|\.py)$", m.group(2)):
            continue  # a continued description
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(folder for _, folder in stack) + m.group(2)
        paths.append(path)
        if path.endswith("/"):
            stack.append((indent, m.group(2)))
    return paths


def is_placeholder(arg: str) -> bool:
    """``RECIPE.yaml``, ``PATH``, ``OUT_DIR``, ``accelerate_configs/<config>.yaml``, ``path/to/x``: not real files."""
    parts = arg.rstrip("/").split("/")
    upper = r"[A-Z][A-Z0-9_]*(\.(yaml|yml|json|jsonl|py|sh))?"  # README.md is a real file, RECIPE.yaml is not
    return "<" in arg or arg.startswith("path/to") or any(re.fullmatch(upper, p) for p in parts)


def repo_path_errors(arg: str) -> list[str]:
    """A missing repository file named by ``arg`` (``recipes/x.yaml``, ``tests/test_x.py::name``, ``--k=v`` values)."""
    value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
    path = value.split("::")[0]
    if path.split("/")[0] not in REPO_ENTRIES or is_placeholder(path) or os.path.exists(os.path.join(ROOT, path)):
        return []
    return [f"{path}: no such file"]
