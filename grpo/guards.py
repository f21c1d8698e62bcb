"""Guards against a run going wrong: non-finite numbers kept out of the weights, collapse caught and acted on.

**Non-finite values** (``guard_nonfinite``, on by default):

* Rewards: a reward function's NaN or infinite value is counted (``guard/nonfinite_rewards``) and treated as
  None, i.e. unverifiable (left out of the group statistics, advantage 0; grpo.algo.advantages). A NaN alone is
  already handled that way; an infinite reward would otherwise turn its group's advantages into NaN.
* Loss and gradient: a micro-batch whose loss is not finite gets its gradient made NaN (the loss is multiplied
  by NaN before backward), so a single test decides: the global gradient norm, which is the same on every
  process (DDP averages gradients over processes before the norm is taken; DeepSpeed computes a global norm).
  All processes therefore skip together, with no extra communication. A skipped step changes neither the
  weights nor the AdamW moments; the scheduler and the step counter still advance, so ``max_steps`` bounds the
  run. Under DeepSpeed the engine steps inside ``backward`` and its own overflow check skips the step (it tests
  the gradient norm in ZeRO-3, with fp16, and in ZeRO-1/2 with fp32 or bf16 when ``check_grad_overflow`` is on,
  DeepSpeed's default); the guard counts it from the norm DeepSpeed reports.

**Collapse** (``collapse_patience`` > 0): after each rollout the logged record is checked for signals: a
skipped step; entropy below ``collapse_entropy_floor``; every group constant (``zero_std_frac`` = 1, with
``collapse_zero_std``); mean completion length at or below ``collapse_length_floor``. After
``collapse_patience`` bad rollouts in a row the run stops with :class:`TrainingCollapsed`, whose message names
the signals and the last good checkpoint, or, with ``on_collapse: rollback``, the trainer reloads that
checkpoint with the learning rate halved (at most ``max_rollbacks`` times). Checkpoints are not written while a
bad streak is running, so the last good one is never rotated away by ``save_total_limit``. The counters start
at 0 in each process's run (a resumed run counts afresh; its resume checkpoint is its last good one).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from grpo.distributed import sum_over_processes


class TrainingCollapsed(RuntimeError):
    """The collapse guard stopped the run; the message names the signals and the last good checkpoint."""


class RunGuard:
    """The run's guards (module docstring). ``args``: ``GRPOArguments``; ``accelerator``: to sum counts over
    processes (None: one process)."""

    def __init__(self, args, accelerator=None):
        self.args = args
        self.accelerator = accelerator if accelerator is not None and accelerator.num_processes > 1 else None
        self.skipped_total, self.rollbacks = 0, 0
        self.streak, self.streak_start = 0, 0
        self.last_good: str | None = None
        self.message = ""  # why the last rollback happened
        self._reset_rollout()

    def _reset_rollout(self) -> None:
        self.skipped, self.nonfinite_rewards, self.steps = 0, 0, 0

    @property
    def healthy(self) -> bool:
        """False while a streak of bad rollouts is running (checkpoints then wait)."""
        return self.streak == 0

    # --- non-finite values -----------------------------------------------------------------------

    def screen(self, reward_funcs: list) -> list:
        """The reward functions, each wrapped to count non-finite values and return None for them."""
        if not self.args.guard_nonfinite:
            return reward_funcs
        return [self._screened(f) for f in reward_funcs]

    def _screened(self, func):
        @functools.wraps(func)
        def screened(*args, **kwargs):
            values = func(*args, **kwargs)
            bad = [isinstance(v, float) and not math.isfinite(v) for v in values]
            self.nonfinite_rewards += sum(bad)
            return [None if b else v for v, b in zip(values, bad)]

        screened.__name__ = getattr(func, "__name__", type(func).__name__)
        return screened

    def loss_for_backward(self, loss: Tensor) -> Tensor:
        """``loss``, or ``loss * NaN`` when it is not finite: its gradient becomes NaN, so the gradient norm
        test of :meth:`allow_step` skips the step on every process."""
        if self.args.guard_nonfinite and not bool(torch.isfinite(loss.detach())):
            return loss * float("nan")
        return loss

    def allow_step(self, grad_norm: float | Tensor | None) -> bool:
        """Whether the optimizer may step on gradients of global norm ``grad_norm`` (None = not reported:
        allowed). Counts the skipped steps."""
        self.steps += 1
        if not self.args.guard_nonfinite or grad_norm is None or math.isfinite(float(grad_norm)):
            return True
        self.skipped += 1
        self.skipped_total += 1
        return False

    # --- collapse --------------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """``guard/*`` of the rollout just finished (every process must call it with several processes)."""
        nonfinite = float(self.nonfinite_rewards)  # this process's: the reward calls are local
        return {
            "guard/skipped_steps": self.skipped,
            "guard/skipped_steps_total": self.skipped_total,
            "guard/nonfinite_rewards": sum_over_processes(self.accelerator, nonfinite)
            if self.accelerator
            else nonfinite,
            "guard/rollbacks": self.rollbacks,
        }

    def signals(self, record: dict[str, Any]) -> list[str]:
        """The collapse signals of one rollout's record (module docstring), as phrases naming the setting."""
        args, found = self.args, []
        if self.skipped:
            found.append(f"{self.skipped} of {self.steps} optimizer steps skipped (non-finite loss or gradient)")
        entropy = record.get("entropy")
        if args.collapse_entropy_floor > 0 and entropy is not None and entropy < args.collapse_entropy_floor:
            found.append(f"entropy {entropy:.4g} below collapse_entropy_floor {args.collapse_entropy_floor}")
        if args.collapse_zero_std and record.get("zero_std_frac") == 1.0:
            found.append("every group's rewards equal (zero_std_frac = 1, collapse_zero_std)")
        length = record.get("completion_length/mean")
        if args.collapse_length_floor > 0 and length is not None and length <= args.collapse_length_floor:
            found.append(
                f"mean completion length {length:.4g} tokens at or below collapse_length_floor "
                f"{args.collapse_length_floor}"
            )
        return found

    def check(self, step: int, record: dict[str, Any]) -> str | None:
        """Score the rollout that ended at optimizer step ``step``. Returns the checkpoint to roll back to, or
        None to go on. Raises :class:`TrainingCollapsed` after ``collapse_patience`` bad rollouts in a row when
        ``on_collapse`` is ``stop`` or no rollback is possible."""
        signals = self.signals(record)
        self._reset_rollout()
        patience = self.args.collapse_patience
        if not patience:
            return None
        if not signals:
            self.streak = 0
            return None
        self.streak += 1
        self.streak_start = step if self.streak == 1 else self.streak_start
        if self.streak < patience:
            return None
        message = (
            f"collapse guard: {self.streak} rollouts in a row were bad (steps {self.streak_start}-{step}); "
            f"the last: {'; '.join(signals)}. Last good checkpoint: {self.last_good or 'none written yet'}"
        )
        if self.args.on_collapse == "rollback" and self.last_good and self.rollbacks < self.args.max_rollbacks:
            self.rollbacks += 1
            self.streak = 0
            self.message = f"{message}; rolling back to it with the learning rate halved (rollback {self.rollbacks})"
            return self.last_good
        if self.args.on_collapse == "rollback":
            message += f"; no rollback left (max_rollbacks {self.args.max_rollbacks})" if self.last_good else ""
        hint = f" (resume: --resume_from_checkpoint {self.last_good})" if self.last_good else ""
        raise TrainingCollapsed(message + hint)

    def checkpoint_due(self, step: int) -> bool:
        """Whether to checkpoint after ``step``: every ``save_steps``, unless a bad streak is running (the last
        good checkpoint must not be rotated away by ``save_total_limit``)."""
        return bool(self.args.save_steps and step % self.args.save_steps == 0 and self.healthy)

    def saved(self, path: str) -> None:
        """A checkpoint was written at ``path``; it is the last good one when no bad streak is running."""
        if self.healthy:
            self.last_good = path


def halve_learning_rate(scheduler, optimizer, base_lrs: list[float]) -> None:
    """Set the schedule's peak learning rates to half of ``base_lrs`` (those in use before a rollback) and the
    optimizer's current ones to match, for a ``LambdaLR`` schedule (lr = base_lr x lambda(step))."""
    scheduler.base_lrs = [lr / 2 for lr in base_lrs]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
