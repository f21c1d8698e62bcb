"""Processes and DeepSpeed: build the Accelerator, fill DeepSpeed's settings from our config, ZeRO-3 helpers.

Launch with ``accelerate launch --config_file accelerate_configs/{ddp,zero2,zero3,zero3_offload}.yaml``.
On a machine without CUDA, accelerate given a GPU config would silently run every process as a world of
one (no backend); :func:`build_accelerator` then chooses gloo itself: plain data parallel runs as
accelerate's multi-CPU mode, DeepSpeed gets ``backend="gloo"`` for its process group.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs

TORCH_EXTENSIONS_DEFAULT = os.path.join("~", ".cache", "grpo", "torch_extensions")


def launched_world_size() -> int:
    """Processes started by the launcher (``WORLD_SIZE``; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def uses_deepspeed() -> bool:
    """True when ``accelerate launch`` was given a DeepSpeed config."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def build_accelerator(args, mixed_precision: str, log_with: list[str] | None) -> Accelerator:
    """The run's Accelerator; under DeepSpeed its plugin takes micro-batch size, gradient accumulation and
    clipping from ``args`` (``GRPOArguments``), the one place those values live.

    Without CUDA and with more than one process, the process group uses gloo (see the module docstring).
    DeepSpeed compiles a communication op on first use: ``TORCH_EXTENSIONS_DIR`` defaults to
    ``~/.cache/grpo/torch_extensions`` so that is done once per machine.
    Raises ``ValueError`` when the DeepSpeed config fixes one of those values to something else, and for
    ``eval_steps`` under ZeRO-3.
    """
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser(TORCH_EXTENSIONS_DEFAULT))
    kwargs = {
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "mixed_precision": mixed_precision,
        "log_with": log_with,
        "project_dir": args.output_dir,
    }
    if not torch.cuda.is_available() and launched_world_size() > 1:
        if uses_deepspeed():
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
        else:
            kwargs["cpu"] = True  # accelerate's MULTI_CPU: DDP over gloo
    accelerator = Accelerator(**kwargs)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        configure_deepspeed(accelerator.state.deepspeed_plugin.deepspeed_config, args)
        if args.eval_steps and accelerator.state.deepspeed_plugin.zero_stage == 3:
            raise ValueError(
                "eval_steps > 0 is not supported under ZeRO-3 (evaluation runs on the main process "
                "only, a partitioned model needs all of them); set eval_steps: 0 or use zero2.yaml"
            )
    if accelerator.num_processes > 1:
        accelerator.print(
            f"grpo: {accelerator.num_processes} processes, {accelerator.distributed_type.value} "
            f"(ZeRO stage {zero_stage(accelerator)}), backend {accelerator.state.backend}"
        )
    return accelerator


def configure_deepspeed(config: dict, args) -> None:
    """Set ``train_micro_batch_size_per_gpu``, ``gradient_accumulation_steps`` and ``gradient_clipping`` of a
    DeepSpeed config dict from ``args`` where they are ``auto`` or absent; raise ``ValueError`` naming the key
    when the config fixes a different value. ``train_batch_size`` is always derived (``auto``: accelerate
    sets micro-batch x accumulation x processes). Under ZeRO-3, checkpoints need the gathered weights:
    ``stage3_gather_16bit_weights_on_model_save`` is turned on."""
    wanted = {
        "train_micro_batch_size_per_gpu": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "gradient_clipping": float(args.max_grad_norm),
    }  # 0 = no clipping, in DeepSpeed as in grpo
    for key, value in wanted.items():
        current = config.get(key, "auto")
        if current == "auto":
            config[key] = value
        elif float(current) != float(value):
            raise ValueError(
                f"the DeepSpeed config sets {key}={current} but the recipe gives {value}; "
                f"leave it out (or `auto`) of the DeepSpeed config: grpo fills it from the recipe"
            )
    config["train_batch_size"] = "auto"  # accelerate fills micro-batch x accumulation x processes
    if config.get("zero_optimization", {}).get("stage") == 3:  # checkpoints gather the whole weights (any dtype)
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator: Accelerator) -> int:
    """The DeepSpeed ZeRO stage, or 0 without DeepSpeed."""
    if not is_deepspeed(accelerator):
        return 0
    return int(accelerator.state.deepspeed_plugin.zero_stage)


@contextmanager
def whole_models(accelerator: Accelerator):
    """Context in which transformers loads models whole, not partitioned at construction.

    accelerate registers its DeepSpeed config with transformers whatever ``zero3_init_flag`` says, and
    ``from_pretrained`` then builds ZeRO-3 models already partitioned (``deepspeed.zero.Init``). grpo
    loads the policy whole on every process (so the reference model can be a plain copy and resumed
    weights load with ``load_state_dict``); ``prepare`` partitions it afterwards.
    """
    plugin = accelerator.state.deepspeed_plugin if is_deepspeed(accelerator) else None
    if plugin is None:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if getattr(plugin, "dschf", None) is not None:
            set_hf_deepspeed_config(plugin.dschf)


def gathered_for_generation(model: torch.nn.Module, accelerator: Accelerator, enabled: bool = True):
    """Context in which a ZeRO-3 partitioned ``model`` (the prepared engine) holds its whole parameters on every
    process, with ZeRO-3's per-layer gather hooks lifted (trl's ``unwrap_model_for_generation``); a no-op
    otherwise, and when not ``enabled`` (a sampler with its own copy of the weights). Every process must enter
    it (the gather is a collective).

    Used around generation: a partitioned forward gathers each layer collectively, so processes whose
    rollouts end after different numbers of tokens would wait on each other forever; with the hooks in
    place every decoding step would also pay their per-module cost.
    """
    if not enabled or zero_stage(accelerator) != 3:
        return nullcontext()
    from trl.models.utils import unwrap_model_for_generation

    return unwrap_model_for_generation(model, accelerator)


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True when ``flag`` is True on any process (a collective: every process must call it)."""
    return sum_over_processes(accelerator, float(flag)) > 0


def sum_over_processes(accelerator: Accelerator, value: float) -> float:
    """``value`` summed over all processes (a collective: every process must call it)."""
    return float(accelerator.reduce(torch.tensor(float(value), device=accelerator.device), reduction="sum"))
