"""Run configuration: four dataclasses, the single source of truth for every setting.

A recipe is a YAML file whose keys are field names of these dataclasses; command-line flags
override it (``grpo train RECIPE.yaml --learning_rate 1e-6``). Parsing uses trl's ``TrlParser``
(dataclasses + YAML + flags). Every field is documented once, in its ``metadata["help"]``, which
is also what ``grpo train --help`` prints.

The classes live in grpo/config/arguments.py (model, data, training) and grpo/config/vllm_arguments.py;
their building blocks (ConfigError, help_field, the checks) in grpo/config/fields.py. This module reads and
writes whole configurations.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import yaml

from grpo.config.arguments import PROMPT_TEMPLATES, DataArguments, GRPOArguments, ModelArguments
from grpo.config.fields import ConfigError, JsonDict, checked_trackers, help_field
from grpo.config.vllm_arguments import VLLMArguments

__all__ = [
    "CONFIG_CLASSES",
    "ConfigError",
    "DataArguments",
    "GRPOArguments",
    "JsonDict",
    "ModelArguments",
    "PROMPT_TEMPLATES",
    "VLLMArguments",
    "checked_trackers",
    "config_dict",
    "help_field",
    "load_config",
    "parse_config",
    "save_config",
]


CONFIG_CLASSES = (ModelArguments, DataArguments, GRPOArguments, VLLMArguments)
CONFIG_SECTIONS = ("model", "data", "training", "vllm")  # config.yaml: one section per class


def parse_config(argv: list[str], classes: tuple[type, ...] = CONFIG_CLASSES) -> tuple[Any, ...]:
    """Parse ``[RECIPE.yaml] [--config RECIPE.yaml] [--field value ...]`` into the dataclasses ``classes``
    (default: model, data, GRPO and vLLM arguments; ``grpo sft``, ``grpo sample`` and ``grpo cold_start`` pass
    their own).

    The recipe's values replace the defaults and flags replace the recipe's. Raises :class:`ConfigError` (a
    missing or unreadable recipe, an unknown key, a value the dataclass checks refuse) or exits with argparse's
    message on unknown flags and unparsable values.
    """
    from trl import TrlParser

    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--config", argv[0], *argv[1:]]
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        if not os.path.isfile(path):
            raise ConfigError(f"recipe not found: {path}")
    try:
        return tuple(TrlParser(classes).parse_args_and_config(argv))  # type: ignore[return-value]
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(" ".join(str(err).split())) from err


def config_dict(*configs: Any) -> dict[str, dict[str, Any]]:
    """The resolved configuration as ``{"model": {...}, "data": {...}, "training": {...}, "vllm": {...}}``."""
    return {name: asdict(cfg) for name, cfg in zip(CONFIG_SECTIONS, configs)}


def save_config(path: str, *configs: Any) -> None:
    """Write the resolved configuration as YAML (atomically: :func:`grpo.io.write_text`)."""
    from grpo.io import write_text

    write_text(path, yaml.safe_dump(config_dict(*configs), sort_keys=False))


def load_config(path: str) -> tuple[ModelArguments, DataArguments, GRPOArguments, VLLMArguments]:
    """Read a configuration written by :func:`save_config` (a missing ``vllm`` section, as written before it
    existed, gives its defaults). Raises ``ValueError`` on unknown keys."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    try:
        raw.setdefault("vllm", {})
        return tuple(cls(**raw[name]) for cls, name in zip(CONFIG_CLASSES, CONFIG_SECTIONS))  # type: ignore[return-value]
    except (AttributeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a grpo configuration ({err})") from err
