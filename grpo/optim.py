"""The optimizer (AdamW, Loshchilov & Hutter 2019) and its learning-rate schedule, from ``GRPOArguments``."""

from __future__ import annotations

import torch

SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine"}  # lr_scheduler_type -> transformers' name


def build_optimizer(model: torch.nn.Module, args) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (LoRA: the adapter's) with the recipe's ``learning_rate``,
    ``adam_beta1/2``, ``adam_epsilon`` and ``weight_decay`` (decoupled)."""
    return torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )


def build_scheduler(optimizer, args):
    """Linear warmup over ``warmup_steps``, then constant or cosine decay to 0 at ``max_steps`` (steps are
    optimizer steps). Build it on the prepared optimizer, the one that steps (with DeepSpeed's CPU offload: its
    CPU Adam), and step it by hand once per optimizer step (accelerate's wrapper would step it once per process)."""
    from transformers import get_scheduler

    return get_scheduler(
        SCHEDULES[args.lr_scheduler_type],
        optimizer,
        num_warmup_steps=args.warmup_steps,
        num_training_steps=args.max_steps,
    )
