"""``grpo pipeline RECIPE.yaml``: the DeepSeek-R1 multi-stage pipeline as a list of stages run in order.

DeepSeek-AI 2025, "DeepSeek-R1", §2.3: (1) cold-start SFT on readable chains of thought, (2) reasoning RL with a
language-consistency reward, (3) rejection sampling from the RL model, then SFT on the kept answers, (4) a
second RL stage. A pipeline recipe::

    output_dir: outputs/r1
    model_name_or_path: smollm2-135m-instruct     # the base model
    common: {prompt_template: chat, ...}           # fields given to every stage that has them
    stages:
      - {name: cold_start_data, kind: cold_start, recipe: ..., overrides: {...}}
      - {name: sft_cold_start, kind: sft, recipe: recipes/smollm2/r1_sft.yaml}
      - {name: rl_reasoning, kind: grpo, recipe: recipes/smollm2/r1_grpo.yaml}
      - {name: rejection_sampling, kind: sample, recipe: ...}
      - {name: sft_rejection, kind: sft, model_from: base}
      - {name: rl_all, kind: grpo}

Each stage runs in ``output_dir/<name>`` from a resolved recipe ``stage.yaml`` written there: its ``recipe``
file, then ``common`` (only fields that the stage's arguments have), then its ``overrides``, then the wiring:
``output_dir``; ``model_name_or_path`` = the model of stage ``model_from`` (default: the latest earlier stage
that made a model, else the base; ``base`` = the base model); for ``sft`` stages ``dataset_name`` = the data of
stage ``data_from`` (default: the latest earlier stage that made data). Artefacts: ``cold_start`` and
``sample`` write ``data.jsonl``; ``sft`` and ``grpo`` write ``model/`` (a standalone transformers folder; a
``grpo`` stage exports its final checkpoint). A stage is complete when its artefact and a ``DONE`` marker
(written atomically, last) exist; a rerun skips complete stages and resumes a ``grpo`` stage from its newest
checkpoint (an ``sft`` stage from its newest trainer checkpoint when ``save_steps`` > 0).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

KINDS = ("cold_start", "sft", "grpo", "sample")
ARTEFACT = {"cold_start": "data.jsonl", "sample": "data.jsonl", "sft": "model", "grpo": "model"}
DONE = "DONE"


@dataclass
class Stage:
    """One stage of a pipeline recipe (see the module doc)."""

    name: str
    kind: str
    recipe: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    model_from: str | None = None
    data_from: str | list[str] | None = None

    @property
    def makes_model(self) -> bool:
        return ARTEFACT[self.kind] == "model"


def _argument_classes(kind: str) -> tuple:
    """The argument classes that the subcommand of ``kind`` parses its recipe into."""
    from grpo.config import CONFIG_CLASSES
    from grpo.r1.cold_start import COLD_START_CLASSES
    from grpo.r1.sample import SAMPLE_CLASSES
    from grpo.r1.sft import SFT_CLASSES

    return {"cold_start": COLD_START_CLASSES, "sft": SFT_CLASSES, "grpo": CONFIG_CLASSES, "sample": SAMPLE_CLASSES}[
        kind
    ]


def stage_fields(kind: str) -> set[str]:
    """Recipe fields that a stage of ``kind`` accepts."""
    return {f.name for cls in _argument_classes(kind) for f in dataclasses.fields(cls)}


def load_pipeline(path: str) -> tuple[dict[str, Any], list[Stage]]:
    """Read a pipeline recipe. Raises :class:`grpo.config.ConfigError` naming the file and stage for unknown kinds, duplicate or
    missing names, unknown keys, and ``model_from``/``data_from`` that name no earlier stage."""
    from grpo.config import ConfigError

    if not os.path.isfile(path):
        raise ConfigError(f"pipeline recipe not found: {path}")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    unknown = set(raw) - {"output_dir", "model_name_or_path", "common", "stages"}
    if unknown:
        raise ConfigError(f"{path}: unknown pipeline keys {sorted(unknown)}")
    if not raw.get("stages") or "output_dir" not in raw:
        raise ConfigError(f"{path}: a pipeline needs output_dir and a non-empty stages list")
    stages, names = [], set()
    for i, entry in enumerate(raw["stages"]):
        where = f"{path}: stage {i} ({entry.get('name', '?')})"
        try:
            stage = Stage(**entry)
        except TypeError as err:
            raise ConfigError(f"{where}: {err}") from None
        if stage.kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {KINDS}, got {stage.kind!r}")
        if stage.name in names or not stage.name or "/" in stage.name:
            raise ConfigError(f"{where}: stage names must be unique folder names")
        bad = set(stage.overrides) - stage_fields(stage.kind)
        if bad:
            raise ConfigError(f"{where}: overrides {sorted(bad)} are not fields of a {stage.kind} stage")
        data_refs = stage.data_from if isinstance(stage.data_from, list) else [stage.data_from]
        for ref, want_model in ((stage.model_from, True), *((d, False) for d in data_refs)):
            if ref is not None and ref != "base" and ref not in names:
                raise ConfigError(f"{where}: {ref!r} is not an earlier stage")
            if ref not in (None, "base") and want_model != next(s for s in stages if s.name == ref).makes_model:
                raise ConfigError(f"{where}: stage {ref!r} does not make a {'model' if want_model else 'data set'}")
        stages.append(stage)
        names.add(stage.name)
    return raw, stages


def stage_dir(pipeline: dict[str, Any], stage: Stage) -> str:
    return os.path.join(pipeline["output_dir"], stage.name)


def is_complete(folder: str, kind: str) -> bool:
    """True when ``folder`` holds the stage's artefact and its ``DONE`` marker."""
    return os.path.isfile(os.path.join(folder, DONE)) and os.path.exists(os.path.join(folder, ARTEFACT[kind]))


def resolve_stage(pipeline: dict[str, Any], stages: list[Stage], index: int, base_dir: str) -> dict[str, Any]:
    """The stage's resolved recipe (recipe file < common < overrides < wiring), see the module doc."""
    stage = stages[index]
    recipe: dict[str, Any] = {}
    if stage.recipe:
        path = stage.recipe if os.path.isabs(stage.recipe) else os.path.join(base_dir, stage.recipe)
        with open(path) as f:
            recipe = yaml.safe_load(f) or {}
    fields = stage_fields(stage.kind)
    recipe.update({k: v for k, v in (pipeline.get("common") or {}).items() if k in fields})
    recipe.update(stage.overrides)
    recipe["output_dir"] = stage_dir(pipeline, stage)
    earlier = stages[:index]
    if stage.kind != "cold_start" and "model_name_or_path" not in stage.overrides:  # an override (a teacher) stays
        source = stage.model_from or next((s.name for s in reversed(earlier) if s.makes_model), "base")
        if source != "base":
            recipe["model_name_or_path"] = os.path.join(pipeline["output_dir"], source, "model")
        elif "model_name_or_path" in pipeline:
            recipe["model_name_or_path"] = pipeline["model_name_or_path"]
    if stage.kind == "sft" and "dataset_name" not in stage.overrides:
        data = stage.data_from or next((s.name for s in reversed(earlier) if not s.makes_model), None)
        if data is None and "dataset_name" not in recipe:
            raise ValueError(f"stage {stage.name}: no earlier data stage and no dataset_name")
        if isinstance(data, list):  # several data stages: their rows concatenated, in the listed order
            recipe["dataset_name"] = concatenate_data(
                [os.path.join(pipeline["output_dir"], d, "data.jsonl") for d in data],
                os.path.join(stage_dir(pipeline, stage), "train_data.jsonl"),
            )
        elif data is not None:
            recipe["dataset_name"] = os.path.join(pipeline["output_dir"], data, "data.jsonl")
    return recipe


def concatenate_data(paths: list[str], out: str) -> str:
    """Concatenate JSONL files into ``out`` (atomically); returns ``out``."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        for path in paths:
            with open(path, encoding="utf-8") as src:
                f.writelines(line if line.endswith("\n") else line + "\n" for line in src if line.strip())
    os.replace(out + ".tmp", out)
    return out


def run_stage(kind: str, recipe_path: str, folder: str) -> None:
    """Run one stage from its resolved recipe file; a ``grpo`` stage resumes from its newest checkpoint."""
    if kind == "grpo":
        run_grpo_stage([recipe_path], folder)
    else:  # cold_start, sft, sample: the grpo subcommand of that name
        from grpo.cli import command

        command(kind)([recipe_path])


def run_grpo_stage(argv: list[str], folder: str) -> None:
    """Train (resuming from the newest checkpoint in ``folder`` if any) and export the last checkpoint to ``model/``."""
    from grpo.checkpoint import list_checkpoints, read_trainer_state
    from grpo.config import parse_config
    from grpo.export import export_checkpoint
    from grpo.trainer import GRPOTrainer

    configs = parse_config(argv)
    args = configs[2]
    found = list_checkpoints(folder)
    if not found or read_trainer_state(found[-1])["global_step"] < args.max_steps:
        args.resume_from_checkpoint = found[-1] if found else None
        GRPOTrainer(*configs).train()
        found = list_checkpoints(folder)
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch: the main process exports
        export_checkpoint(found[-1], os.path.join(folder, "model"))


def launcher_runner(launcher: str) -> Callable[[str, str, str], None]:
    """A runner that starts ``sft`` and ``grpo`` stages as ``LAUNCHER -m grpo.r1.pipeline KIND RECIPE FOLDER``
    (e.g. ``accelerate launch --config_file accelerate_configs/ddp.yaml``) and runs the others in this process.
    Raises ``RuntimeError`` when the launched stage fails."""
    import shlex
    import subprocess

    def runner(kind: str, recipe_path: str, folder: str) -> None:
        if kind not in ("sft", "grpo"):
            return run_stage(kind, recipe_path, folder)
        command = [*shlex.split(launcher), "-m", "grpo.r1.pipeline", kind, recipe_path, folder]
        if subprocess.run(command).returncode != 0:
            raise RuntimeError(f"stage in {folder} failed: {' '.join(command)}")

    return runner


def mark_done(folder: str, info: dict[str, Any]) -> None:
    """Write the ``DONE`` marker atomically (temporary file, then rename)."""
    from grpo.io import write_json

    write_json(os.path.join(folder, DONE), info)


def run_pipeline(
    path: str, runner: Callable[[str, str, str], None] = run_stage, only: list[str] | None = None
) -> list[str]:
    """Run every incomplete stage of the pipeline recipe at ``path`` in order (``only``: these stage names);
    returns the names of the stages that ran. ``runner(kind, recipe_path, folder)`` runs one stage."""
    pipeline, stages = load_pipeline(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    ran = []
    for i, stage in enumerate(stages):
        folder = stage_dir(pipeline, stage)
        if is_complete(folder, stage.kind) or (only and stage.name not in only):
            print(
                f"grpo pipeline: stage {stage.name} ({stage.kind}) {'complete' if not only or stage.name in only else 'not selected'}, skipped"
            )
            continue
        os.makedirs(folder, exist_ok=True)
        recipe = resolve_stage(pipeline, stages, i, _recipe_base(base_dir, stage))
        recipe_path = os.path.join(folder, "stage.yaml")
        with open(recipe_path + ".tmp", "w") as f:
            yaml.safe_dump(recipe, f, sort_keys=False)
        os.replace(recipe_path + ".tmp", recipe_path)
        print(f"grpo pipeline: stage {stage.name} ({stage.kind}) -> {folder}")
        start = time.time()
        runner(stage.kind, recipe_path, folder)
        if not os.path.exists(os.path.join(folder, ARTEFACT[stage.kind])):
            raise RuntimeError(f"stage {stage.name} finished without writing {ARTEFACT[stage.kind]}")
        mark_done(
            folder,
            {
                "stage": stage.name,
                "kind": stage.kind,
                "seconds": round(time.time() - start, 1),
                "artefact": os.path.join(folder, ARTEFACT[stage.kind]),
            },
        )
        ran.append(stage.name)
    return ran


def _recipe_base(pipeline_dir: str, stage: Stage) -> str:
    """Stage recipe paths are relative to the working directory when they exist there, else to the pipeline file."""
    return "" if stage.recipe and os.path.exists(stage.recipe) else pipeline_dir


def pipeline_main(argv: list[str]) -> int:
    """``grpo pipeline RECIPE.yaml [--only a,b]``: runs the incomplete stages in order."""
    import argparse

    parser = argparse.ArgumentParser(prog="grpo pipeline", description="Run a multi-stage (DeepSeek-R1) pipeline.")
    parser.add_argument("recipe", help="pipeline recipe (YAML with output_dir and stages)")
    parser.add_argument("--only", default=None, help="comma-separated stage names to run (the others are skipped)")
    parser.add_argument(
        "--launcher",
        default=None,
        help="start sft and grpo stages with this command, e.g. 'accelerate launch --config_file X'",
    )
    ns = parser.parse_args(argv)
    runner = launcher_runner(ns.launcher) if ns.launcher else run_stage
    ran = run_pipeline(ns.recipe, runner=runner, only=ns.only.split(",") if ns.only else None)
    print(json.dumps({"ran": ran}))
    return 0


if __name__ == "__main__":  # one stage, as started by launcher_runner: python -m grpo.r1.pipeline KIND RECIPE FOLDER
    import sys

    run_stage(*sys.argv[1:4])
