"""Checkpoints: written atomically, found by step, restored exactly, with one process or several.

A checkpoint is a folder ``checkpoint-<step>`` holding ``model/`` (``save_pretrained``: the adapter
for LoRA, the full weights otherwise, with the tokenizer; under ZeRO-3 gathered from every process),
the optimizer state (``optimizer.pt``; under DeepSpeed instead ``deepspeed/``, DeepSpeed's own
checkpoint with one optimizer partition per process), ``scheduler.pt``, ``rng.pt`` (python, numpy,
torch and CUDA generator states; ``rng-<rank>.pt`` for the other processes), ``trainer_state.json``
(step, data position, number of processes, ZeRO stage) and ``config.yaml`` (the resolved run
configuration). Every process writes into one hidden temporary folder; after a barrier the main
process renames it into place, so a crash never leaves a half-written checkpoint.

``model/`` alone restores the weights anywhere (one process, ``grpo export``). The optimizer state is
restored when the run has the layout it was saved with (same number of processes and ZeRO stage, or
no DeepSpeed on both sides); otherwise the weights are restored and the AdamW moments start from zero,
with a warning.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import warnings
from typing import Any

import numpy as np
import torch

from grpo.io import write_json

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders in ``output_dir``, oldest (lowest step) first."""
    if not os.path.isdir(output_dir):
        return []
    found = [
        (int(m.group(1)), name)
        for name in os.listdir(output_dir)
        if (m := CHECKPOINT_RE.match(name)) and os.path.isfile(os.path.join(output_dir, name, "trainer_state.json"))
    ]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def resolve_checkpoint(path: str | None, output_dir: str) -> str | None:
    """The checkpoint to resume from: None for None; ``auto`` -> the newest checkpoint in ``output_dir``, or None
    (start fresh) when there is none, for jobs that may be preempted and restarted with the same command;
    ``latest`` -> the newest checkpoint in ``output_dir``; else ``path`` itself.

    Raises :class:`grpo.config.ConfigError` (a setting the run cannot follow) when ``latest`` finds none or
    ``path`` is not a complete checkpoint.
    """
    from grpo.config import ConfigError

    if not path:
        return None
    found = list_checkpoints(output_dir) if path in ("auto", "latest") else [path]
    if path == "latest" and not found:
        raise ConfigError(f"resume_from_checkpoint=latest but {output_dir} holds no checkpoint")
    if found and not os.path.isfile(os.path.join(found[-1], "trainer_state.json")):
        raise ConfigError(f"resume_from_checkpoint: {path} is not a checkpoint (no trainer_state.json)")
    return found[-1] if found else None


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
    """Write ``checkpoint-<step>`` atomically and rotate old ones (one writer).

    Args:
        write_files: ``write_files(folder)`` writes the checkpoint's contents into ``folder``.
        keep: keep at most this many checkpoints (None = all).
    Returns the checkpoint's path. A failure inside ``write_files`` removes the temporary folder and
    leaves earlier checkpoints untouched.
    """
    tmp = new_temp_folder(output_dir, step)
    try:
        write_files(tmp)
        return publish(tmp, output_dir, step, keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def new_temp_folder(output_dir: str, step: int) -> str:
    """A fresh hidden folder in ``output_dir`` to write checkpoint ``step`` into before :func:`publish`."""
    os.makedirs(output_dir, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step}-", dir=output_dir)


def publish(tmp: str, output_dir: str, step: int, keep: int | None = None) -> str:
    """Rename the finished ``tmp`` folder to ``checkpoint-<step>`` (replacing one of the same step) and keep
    at most ``keep`` checkpoints (oldest removed first). Returns the checkpoint's path."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    if os.path.exists(final):  # re-saving the same step: move the old one aside first
        old = tempfile.mkdtemp(prefix=f".old-checkpoint-{step}-", dir=output_dir)
        os.replace(final, os.path.join(old, "c"))
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    if keep is not None:
        for stale in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def write_trainer_state(folder: str, state: dict[str, Any]) -> None:
    write_json(os.path.join(folder, "trainer_state.json"), state)


def read_trainer_state(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, "trainer_state.json")) as f:
        return json.load(f)


DEEPSPEED_TAG = "deepspeed"  # sub-folder of DeepSpeed's own checkpoint (optimizer partitions)


def rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-{rank}.pt"


def save_training_checkpoint(
    accelerator,
    policy,
    optimizer,
    scheduler,
    tokenizer,
    configs: tuple,
    state: dict[str, Any],
    output_dir: str,
    keep: int | None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write ``checkpoint-<state['global_step']>``; every process must call it (module docstring: layout).

    ``policy``/``optimizer`` are the prepared objects (a DeepSpeed engine and its optimizer under
    DeepSpeed); ``configs`` the run's config dataclasses (:data:`grpo.config.CONFIG_CLASSES`); ``extra``: more
    files, ``{name: object}`` written with ``torch.save`` by the main process (the asynchronous rollouts' queue,
    grpo/async_rollouts.py). Returns the checkpoint's path.
    """
    from accelerate.utils import broadcast_object_list

    from grpo.config import save_config
    from grpo.distributed import is_deepspeed, zero_stage

    stage, main = zero_stage(accelerator), accelerator.is_main_process
    state = {**state, "num_processes": accelerator.num_processes, "zero_stage": stage}
    # ZeRO-3: a collective that gathers the full weights on the main process; otherwise its module holds them
    state_dict = accelerator.get_state_dict(policy) if stage == 3 else None
    tmp = new_temp_folder(output_dir, state["global_step"]) if main else None
    tmp = broadcast_object_list([tmp])[0] if accelerator.num_processes > 1 else tmp
    try:
        os.makedirs(tmp, exist_ok=True)  # output_dir must be shared by all machines (as DeepSpeed's checkpoints need)
        if is_deepspeed(accelerator):
            policy.save_checkpoint(tmp, tag=DEEPSPEED_TAG, save_latest=False, exclude_frozen_parameters=True)
        torch.save(rng_state(), os.path.join(tmp, rng_file(accelerator.process_index)))
        if main:
            model_dir = os.path.join(tmp, "model")
            accelerator.unwrap_model(policy).save_pretrained(model_dir, state_dict=state_dict)
            tokenizer.save_pretrained(model_dir)
            if not is_deepspeed(accelerator):
                torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
            torch.save(scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
            save_config(os.path.join(tmp, "config.yaml"), *configs)
            for name, value in (extra or {}).items():
                torch.save(value, os.path.join(tmp, name))
            write_trainer_state(tmp, state)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()  # every process has written its part
    final = (
        publish(tmp, output_dir, state["global_step"], keep)
        if main
        else os.path.join(output_dir, f"checkpoint-{state['global_step']}")
    )
    accelerator.wait_for_everyone()  # nobody reads or rotates before the rename
    return final


def load_training_state(accelerator, policy, optimizer, scheduler, folder: str) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states of ``folder`` into the prepared objects; returns its
    trainer state. The weights are loaded before ``prepare`` (:func:`grpo.export.load_weights_into`).
    Warns (optimizer reset) when the run's layout differs from the checkpoint's (module docstring)."""
    from grpo.distributed import is_deepspeed, zero_stage

    state = read_trainer_state(folder)
    saved = (int(state.get("num_processes", 1)), int(state.get("zero_stage", 0)))
    now = (accelerator.num_processes, zero_stage(accelerator))
    deepspeed_dir = os.path.join(folder, DEEPSPEED_TAG)
    if is_deepspeed(accelerator) and saved == now and os.path.isdir(deepspeed_dir):
        loaded, _ = policy.load_checkpoint(
            folder,
            tag=DEEPSPEED_TAG,
            load_module_strict=False,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if loaded is None:  # DeepSpeed only logs a warning when it finds nothing to load
            raise FileNotFoundError(f"{deepspeed_dir}: DeepSpeed found no checkpoint to load")
    elif not is_deepspeed(accelerator) and os.path.isfile(os.path.join(folder, "optimizer.pt")):
        optimizer.load_state_dict(torch.load(os.path.join(folder, "optimizer.pt"), weights_only=False))
    else:
        warnings.warn(
            f"{folder} was saved with {saved[0]} process(es) at ZeRO stage {saved[1]} and this run has "
            f"{now[0]} at stage {now[1]}: the weights are restored, the optimizer state starts from zero",
            stacklevel=2,
        )
    scheduler.load_state_dict(torch.load(os.path.join(folder, "scheduler.pt"), weights_only=False))
    own = os.path.join(folder, rng_file(accelerator.process_index))
    set_rng_state(torch.load(own if os.path.isfile(own) else os.path.join(folder, "rng.pt"), weights_only=False))
    return state
