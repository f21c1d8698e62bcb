"""Checkpoints: written atomically, found by step, restored exactly.

A checkpoint is a folder ``checkpoint-<step>`` holding ``model/`` (``save_pretrained``: the adapter
for LoRA, the full weights otherwise, with the tokenizer), ``optimizer.pt``, ``scheduler.pt``,
``rng.pt`` (python, numpy, torch and CUDA generator states), ``trainer_state.json`` (step and data
position) and ``config.yaml`` (the resolved run configuration). It is written into a hidden
temporary folder and renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from typing import Any

import numpy as np
import torch

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders in ``output_dir``, oldest (lowest step) first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT_RE.match(name))
             and os.path.isfile(os.path.join(output_dir, name, "trainer_state.json"))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def resolve_checkpoint(path: str, output_dir: str) -> str:
    """``latest`` -> the newest checkpoint in ``output_dir``; else ``path`` itself.

    Raises ``FileNotFoundError`` when there is none or the folder is not a complete checkpoint.
    """
    if path == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint=latest but {output_dir} holds no checkpoint")
        return found[-1]
    if not os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise FileNotFoundError(f"{path} is not a checkpoint (no trainer_state.json)")
    return path


def rng_state() -> dict[str, Any]:
    """Every random generator a run draws from."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str, step: int, write_files, keep: int | None = None) -> str:
    """Write ``checkpoint-<step>`` atomically and rotate old ones.

    Args:
        write_files: ``write_files(folder)`` writes the checkpoint's contents into ``folder``.
        keep: keep at most this many checkpoints (None = all).
    Returns the checkpoint's path. A failure inside ``write_files`` removes the temporary folder and
    leaves earlier checkpoints untouched.
    """
    os.makedirs(output_dir, exist_ok=True)
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step}-", dir=output_dir)
    try:
        write_files(tmp)
        if os.path.exists(final):  # re-saving the same step: move the old one aside first
            old = tempfile.mkdtemp(prefix=f".old-checkpoint-{step}-", dir=output_dir)
            os.replace(final, os.path.join(old, "c"))
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if keep is not None:
        for stale in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def write_trainer_state(folder: str, state: dict[str, Any]) -> None:
    with open(os.path.join(folder, "trainer_state.json"), "w") as f:
        json.dump(state, f, indent=2)


def read_trainer_state(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, "trainer_state.json")) as f:
        return json.load(f)
