"""The pieces every configuration dataclass is built from: the error type, the documented field, the checks."""

from __future__ import annotations

import json
from dataclasses import field
from typing import Any

REPORT_TO = ("none", "wandb", "tensorboard")


class ConfigError(ValueError):
    """A bad recipe, flag or setting (the message names the field or file): ``grpo`` prints it as one line and
    exits with status 2, like argparse's own errors."""


class JsonDict(dict):
    """A dict field that a command-line flag gives as a JSON object: ``--reward_kwargs '{"format": {}}'``."""

    def __init__(self, value: Any = ()):
        super().__init__(parse_json("value", value) if isinstance(value, str) else value)


def help_field(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose ``--help`` text (TrlParser / HfArgumentParser) is ``text``."""
    return field(metadata={"help": text}, **kwargs)


_help = help_field


def checked_trackers(report_to: str | list[str]) -> list[str]:
    """``report_to`` as a list (a YAML or flag may give one string). Raises ``ValueError`` for an unknown tracker."""
    trackers = [report_to] if isinstance(report_to, str) else list(report_to)
    for tracker in trackers:
        check_choice("report_to", tracker, REPORT_TO)
    return trackers


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raises ``ValueError`` naming ``name`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def parse_json(name: str, text: str) -> dict:
    """``text`` read as a JSON object; raises ``ValueError`` naming ``name`` otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} must be a JSON object, got {text!r}: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {text!r}")
    return value
