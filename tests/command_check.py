"""Checks that one documented shell command would run as written, without running it.

Per program:

- ``grpo <cmd>``: ``cmd`` is in :data:`grpo.cli.COMMANDS`; for ``train``, ``sft``, ``sample`` and
  ``cold_start`` every ``--flag`` is a field of the argument dataclasses the command parses (``*_CLASSES``);
  ``eval``, ``export``, ``score`` and ``pipeline`` are parsed by their own argparse parsers (``eval`` in recipe
  mode: its options, then the recipe's fields);
- ``python script.py`` / ``bash script.sh``: the script exists and names each ``--flag``; ``python -m module``:
  the module is importable (``-m grpo.cli`` and ``-m pip`` are checked further);
- ``accelerate launch``: accelerate's own parser, the ``--config_file`` exists, then the training script;
- ``pip install``: ``-c`` / ``-r`` files exist and ``.[extra]`` extras are in pyproject.toml.

Everywhere, an argument that names a file of the repository (``recipes/...``, ``scripts/...``) must exist unless
it is a placeholder (``RECIPE.yaml``, ``PATH``, ``accelerate_configs/<config>.yaml``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import os
import re
from unittest import mock

import tomllib

from tests.docs_check import ROOT, is_placeholder, read, repo_path_errors

# Programs whose commands are shown but not checked (their arguments are not ours).
EXTERNAL = {"cd", "export", "git", "ruff", "wandb", "nvidia-smi", "tensorboard", "huggingface-cli", "mkdir"}


def flags(args: list[str] | tuple[str, ...]) -> list[str]:
    """The ``--flag`` names in ``args`` (``--k=v`` gives ``k``)."""
    return [a[2:].split("=")[0] for a in args if re.fullmatch(r"--[\w-]+(=.*)?", a)]


def field_names(classes: tuple[type, ...]) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def dataclass_command_classes() -> dict[str, tuple[type, ...]]:
    """The argument dataclasses of each recipe-style subcommand (the tuples each command passes to parse_config)."""
    from grpo.config import CONFIG_CLASSES
    from grpo.r1.cold_start import COLD_START_CLASSES
    from grpo.r1.sample import SAMPLE_CLASSES
    from grpo.r1.sft import SFT_CLASSES

    return {"train": CONFIG_CLASSES, "sft": SFT_CLASSES, "sample": SAMPLE_CLASSES, "cold_start": COLD_START_CLASSES}


def recipe_errors(args: list[str], classes: tuple[type, ...]) -> list[str]:
    """``[RECIPE.yaml] [--config RECIPE.yaml] --field value ...`` against the fields of ``classes``."""
    known, names = field_names(classes) | {"config", "help"}, ", ".join(c.__name__ for c in classes)
    return [f"unknown flag --{f} (not a field of {names})" for f in flags(args) if f not in known]


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def captured_parser(main, argv: list[str]) -> argparse.ArgumentParser:
    """The argparse parser that ``main(argv)`` builds, taken at its first ``parse_args``/``parse_known_args``
    call, before the command does anything."""

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", capture),
        mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture),
    ):
        try:
            main(argv)
        except _Captured as captured:
            return captured.parser
    raise AssertionError(f"{main.__name__} returned without parsing its arguments")


def parse(parser: argparse.ArgumentParser, args: list[str], known: bool = False):
    """Parse ``args`` with ``parser``, abbreviations refused (a document spells options in full).

    Returns ``(errors, namespace, rest)``: argparse's error message, and with ``known`` the arguments left over.
    """
    parser.allow_abbrev = False
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            if known:
                return [], *parser.parse_known_args(args)
            return [], parser.parse_args(args), []
    except SystemExit as e:
        errors = [] if e.code == 0 else [stderr.getvalue().strip().splitlines()[-1]]  # code 0: --help
        return errors, None, []


def grpo_errors(args: list[str]) -> list[str]:
    """``grpo <cmd> args``: the subcommand exists and its arguments parse."""
    from grpo.cli import COMMANDS, command

    if not args or args[0] in ("-h", "--help"):
        return []
    name, rest = args[0], list(args[1:])
    if name not in COMMANDS:
        return [f"unknown subcommand grpo {name} (known: {', '.join(COMMANDS)})"]
    classes = dataclass_command_classes()
    if name in classes:
        return recipe_errors(rest, classes[name])
    if name == "eval" and "--benchmarks" not in flags(rest) and not {"-h", "--help"} & set(rest):
        errors, _, recipe_args = parse(captured_parser(command(name), rest), rest, known=True)
        return errors + recipe_errors(recipe_args, classes["train"])
    if name == "eval":
        from grpo.eval.cli import build_parser

        return parse(build_parser(), rest)[0]
    return parse(captured_parser(command(name), rest), rest)[0]


def script_errors(path: str, args: list[str]) -> list[str]:
    """A script run with ``args``: it exists, and every ``--flag`` is spelled in its source."""
    if is_placeholder(path):
        return []
    full = os.path.join(ROOT, path)
    if not os.path.isfile(full):
        return [f"{path}: no such file"]
    if path == "scripts/train.py":
        return recipe_errors(args, dataclass_command_classes()["train"])
    source = read(path)
    return [f"{path} has no option --{f}" for f in flags(args) if f"--{f}" not in source]


def module_errors(module: str, args: list[str]) -> list[str]:
    """``python -m module args``."""
    if module == "grpo.cli":
        return grpo_errors(args)
    if module == "pip":
        return pip_errors(args)
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        found = False
    return [] if found else [f"no module {module}"]


def pip_errors(args: list[str]) -> list[str]:
    """``pip install``: constraint and requirement files exist; ``.[a,b]`` extras are declared in pyproject.toml."""
    extras = set(tomllib.loads(read("pyproject.toml"))["project"]["optional-dependencies"])
    errors = []
    for option, value in zip(args, args[1:]):
        if option in ("-c", "-r", "--constraint", "--requirement") and not os.path.isfile(os.path.join(ROOT, value)):
            errors.append(f"{value}: no such file")
    for arg in args:
        m = re.fullmatch(r"\.\[(.*)\]", arg)
        errors += [f"no extra [{e}] in pyproject.toml" for e in (m.group(1).split(",") if m else []) if e not in extras]
    return errors


def accelerate_errors(args: list[str]) -> list[str]:
    """``accelerate launch [options] script|-m module args``, parsed by accelerate's own parser."""
    from accelerate.commands.launch import launch_command_parser

    if args[:1] != ["launch"]:
        return [f"unchecked accelerate subcommand {args[:1]}"]
    errors, ns, rest = parse(launch_command_parser(), args[1:], known=True)
    if errors or rest:
        return errors or [f"unknown accelerate options {rest}"]
    if ns.config_file and not is_placeholder(ns.config_file) and not os.path.isfile(os.path.join(ROOT, ns.config_file)):
        errors.append(f"{ns.config_file}: no such accelerate config")
    if ns.module:
        return errors + module_errors(ns.training_script, ns.training_script_args)
    return errors + script_errors(ns.training_script, ns.training_script_args)


def program_name(token: str) -> str:
    """``.venv/bin/grpo`` and ``.venv-gpu/bin/python`` are ``grpo`` and ``python``."""
    name = token.rsplit("/bin/", 1)[-1]
    return "python" if re.fullmatch(r"python3?(\.\d+)?", name) else name


def command_errors(tokens: tuple[str, ...] | list[str]) -> list[str]:
    """Everything wrong with one command (empty when it parses)."""
    program, args = program_name(tokens[0]), list(tokens[1:])
    errors = [e for a in args for e in repo_path_errors(a)]
    if program == "grpo":
        errors += grpo_errors(args)
    elif program == "python":
        if args[:1] == ["-m"]:
            errors += module_errors(args[1], args[2:])
        elif args[:1] != ["-c"]:
            errors += script_errors(args[0], args[1:])
    elif program in ("bash", "sh"):
        errors += script_errors(args[0], args[1:])
    elif program == "accelerate":
        errors += accelerate_errors(args)
    elif program == "pip":
        errors += pip_errors(args)
    elif program not in EXTERNAL:
        errors.append(f"unknown program {tokens[0]!r} (check it here, or add it to EXTERNAL in tests/command_check.py)")
    return list(dict.fromkeys(errors))
