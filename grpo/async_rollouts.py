"""Asynchronous rollouts with bounded staleness (``async_rollouts: true``, ``max_staleness: s``; docs/async.md).

A producer thread draws prompts, generates and scores rollouts while the trainer trains on earlier ones; the
trainer takes them in order with :meth:`AsyncRollouts.next` and hands new weights over with
:meth:`AsyncRollouts.sync_weights` (where the synchronous loop syncs its sampler).

**Versions.** The policy version ``v`` is the number of rollouts trained into the weights (``global_step /
(num_iterations x steps_per_generation)``); the trainer publishes version ``k + 1`` after training rollout
``k`` (0-based, counted over the whole run). Rollout ``k`` may be sampled once version ``k - s`` is published,
so the trainer, at version ``k`` when it trains rollout ``k``, trains on a lag of at most ``s`` versions
(PipelineRL / AReaL-style bounded staleness; the lag of every rollout is checked again when it is taken).

- Colocated samplers (``hf``, ``replay``): the producer samples from its own copy of the policy; the trainer
  publishes *snapshots* (cloned trainable tensors), so generation never reads weights the optimizer is
  changing. Rollout ``k`` is sampled by exactly version ``max(k - s, v0)`` (``v0``: the version the run started
  or resumed at), whatever the timing; at most ``s + 1`` snapshots are held. The producer draws from its own
  ``torch.Generator``, started from torch's global generator state when it starts, so with ``s = 0`` (and no
  evaluation during training, which draws from the global generator) the rollouts, losses and weights are the
  synchronous loop's, bit for bit.
- ``vllm_server``: the trainer syncs the server as the synchronous loop does; a rollout is stamped with the
  newest published version when its request is sent. The server pauses for a sync, so the weights that served
  it are that version or newer: the recorded lag is an upper bound.

**Behaviour policy.** A rollout's ``sampler_logprobs`` are the log-probs of the policy that sampled it, so the
loss's truncated importance sampling (``tis_cap``) and ratio masking (``is_mask``) correct for staleness as
well as for the sampler-trainer mismatch (``grpo.algo.mismatch``).

**Checkpoints.** A checkpoint taken after training rollout ``v0 - 1`` keeps the queued rollouts
``v0 .. v0 + s - 1`` (waiting for them if they are still being sampled; they need only published versions) and
the producer's state after the last of them (prompt position, generator state); rollouts sampled further
ahead are dropped and sampled again after a resume, from that state and version ``v0``: so a resumed run
trains exactly what the uninterrupted one would have (colocated samplers). The final checkpoint holds no
queue (nothing is sampled past ``max_steps``): a run extended from it samples its first ``s`` rollouts at lag 0.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from grpo.dynamic_sampling import sample_informative
from grpo.samplers import build_run_sampler
from grpo.scoring import score_rollout
from grpo.types import ScoredRollout

STATE_FILE = "async_rollouts.pt"  # in a checkpoint folder: the kept queue and the producer's state


@dataclass
class Produced:
    """One rollout from the producer: its index in the run, the policy version that sampled it, and what the
    trainer logs with it."""

    index: int  # k: the run's k-th rollout (0-based), trained at version k
    version: int  # the policy version that sampled it
    scored: ScoredRollout
    timings: dict[str, float] = field(default_factory=dict)  # seconds: sample, rewards
    reward_stats: dict[str, float] = field(default_factory=dict)  # rewards/<name>/time_s, /timeouts
    state_after: dict[str, Any] = field(default_factory=dict)  # the producer's state once it was sampled


class AsyncRollouts:
    """The producer thread and the trainer's side of it (module docstring). ``trainer``: a
    :class:`grpo.trainer.GRPOTrainer` (its data set, prompt order, rewards, sampler, policy and step are read
    when the producer starts, so changes made after construction count).

    Raises ``grpo.config.ConfigError`` for several processes or DeepSpeed (not supported yet)."""

    def __init__(self, trainer):
        from grpo.config import ConfigError
        from grpo.distributed import is_deepspeed

        if trainer.accelerator.num_processes > 1 or is_deepspeed(trainer.accelerator):
            raise ConfigError("async_rollouts: one training process without DeepSpeed only (not tested yet)")
        self.trainer, self.args = trainer, trainer.args
        self.staleness = self.args.max_staleness
        self.colocated = trainer.sampler.generates_with_policy  # hf, replay: a copy of the policy samples
        self.cond = threading.Condition()
        self.ready: dict[int, Produced] = {}  # sampled, not yet taken
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}  # version -> trainable weights (colocated)
        self.published = -1  # newest published version
        self.next_index = 0  # the next rollout the producer samples
        self.state: dict[str, Any] | None = None  # producer state to start from (resume), else fresh
        self.last_state: dict[str, Any] | None = None  # state after the last rollout taken
        self.sampler_wait = 0.0  # seconds the producer waited since the last take
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_sync_bytes = 0

    # --- the trainer's side -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The trainer's current policy version (rollouts trained)."""
        return self.trainer.global_step // self.args.steps_per_rollout

    @property
    def total(self) -> int:
        """Rollouts the run trains (``max_steps`` read now: nothing is sampled past it)."""
        return -(-self.args.max_steps // self.args.steps_per_rollout)

    def sync_weights(self, model: torch.nn.Module) -> float:
        """Publish the trainer's weights as version :attr:`version` (trainer thread, between updates): a snapshot
        of the trainable tensors (colocated) or a sync of the server. Returns seconds; bytes: ``last_sync_bytes``."""
        start = time.perf_counter()
        if self.colocated:
            snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            self.last_sync_bytes = sum(t.numel() * t.element_size() for t in snapshot.values())
        else:
            self.trainer.sampler.sync_weights(model)
            self.last_sync_bytes = self.trainer.sampler.last_sync_bytes
        with self.cond:
            if self.colocated:
                self.snapshots[self.version] = snapshot
            self.published = self.version
            self.cond.notify_all()
        return time.perf_counter() - start

    def next(self) -> ScoredRollout:
        """The rollout to train now (rollout :attr:`version`), waiting for it if needed; its ``sampling_stats``
        carry the ``async/*`` metrics and its sampling times go into the trainer's ``timings``.

        Raises ``RuntimeError`` when the producer failed (chained to its error) or when the rollout's lag exceeds
        ``max_staleness`` (never, by construction: a refusal, not a drop, so it cannot pass unnoticed)."""
        if self.thread is None:
            self.start()
        k, start = self.version, time.perf_counter()
        with self.cond:
            depth = len(self.ready)
            self.cond.wait_for(lambda: k in self.ready or self.error is not None)
            self._raise_if_failed()
            item = self.ready.pop(k)
            sampler_wait, self.sampler_wait = self.sampler_wait, 0.0
            self.cond.notify_all()
        lag = k - item.version
        if not 0 <= lag <= self.staleness:
            raise RuntimeError(f"rollout {k} was sampled by version {item.version}: lag {lag} > max_staleness")
        self.last_state = item.state_after
        self.trainer.timings.update(item.timings)
        for key, value in item.reward_stats.items():
            self.trainer.reward_stats[key] = self.trainer.reward_stats.get(key, 0.0) + value
        item.scored.sampling_stats.update(
            {
                "async/staleness_mean": float(lag),  # one rollout per step: mean = max
                "async/staleness_max": float(lag),
                "async/policy_version": float(item.version),
                "async/trainer_wait_s": time.perf_counter() - start,
                "async/sampler_wait_s": sampler_wait,
                "async/queue_depth": float(depth),
            }
        )
        return item.scored

    def start(self) -> None:
        """Start the producer (trainer thread, from the first :meth:`next`): the colocated sampler's own copy of
        the policy and its own generator, the first version published if the trainer has not yet."""
        trainer = self.trainer
        if self.published < 0:
            self.sync_weights(trainer.unwrapped_policy)
        self.v0, self.next_index = self.version, max(self.next_index, self.version)
        if self.colocated:
            model = copy.deepcopy(trainer.unwrapped_policy).requires_grad_(False)
            self.sampler = build_run_sampler(model, trainer.tokenizer, self.args, trainer.vllm_args)
            self.loaded = self.published
        else:
            self.sampler = trainer.sampler
        self.generator = torch.Generator()
        self.generator.set_state(torch.get_rng_state() if self.state is None else self.state["generator"])
        if hasattr(self.sampler, "generator"):
            self.sampler.generator = self.generator
        if self.state is not None:
            trainer.prompts.load_state_dict(self.state["prompts"])
        self.reward_funcs = trainer.guard.screen(trainer.reward_funcs)
        self.thread = threading.Thread(target=self._run, name="grpo-rollouts", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop the producer after the rollout it is sampling (trainer thread, end of ``train``)."""
        self.stop.set()
        with self.cond:
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the rollout producer failed: {self.error!r}") from self.error

    # --- checkpoints ------------------------------------------------------------------------------

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(prompt state for trainer_state.json, {STATE_FILE: kept queue and producer state})`` at version
        ``v0`` = :attr:`version`: the rollouts ``v0 .. v0 + s - 1`` (capped at the run's last), waited for."""
        v0 = self.version
        kept = range(v0, min(v0 + self.staleness, self.total))
        if self.thread is None:  # nothing sampled in this process: what it was resumed with, if anything
            if self.state is None:
                return self.trainer.prompts.state_dict(), {}
            queue = [(i.index, i.version, i.scored) for _, i in sorted(self.ready.items())]
            return dict(self.state["prompts"]), {STATE_FILE: {"queue": queue, "state": self.state}}
        with self.cond:
            self.cond.wait_for(lambda: all(k in self.ready for k in kept) or self.error is not None)
            self._raise_if_failed()
            items = [self.ready[k] for k in kept]
        state = items[-1].state_after if items else self.last_state
        if state is None:  # nothing taken nor kept: the state the producer started from
            return self.trainer.prompts.state_dict(), {}
        queue = [(i.index, i.version, i.scored) for i in items]
        return dict(state["prompts"]), {STATE_FILE: {"queue": queue, "state": state}}

    def load(self, folder: str) -> None:
        """Restore checkpoint ``folder``'s queue and producer state (:data:`STATE_FILE`; before the producer
        starts). A checkpoint without it (a synchronous run's, or a final one) restores nothing: the producer starts
        from the trainer's prompt position and torch's generator state."""
        path = os.path.join(folder, STATE_FILE)
        if os.path.isfile(path):
            self.load_state_dict(torch.load(path, weights_only=False))

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore a checkpoint's :data:`STATE_FILE` contents (before the producer starts)."""
        for index, version, scored in saved["queue"]:
            self.ready[index] = Produced(index, version, scored)
        self.state = saved["state"]
        self.next_index = max(self.ready, default=self.version - 1) + 1

    # --- the producer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self.stop.is_set() and self.next_index < self.total:
                k = self.next_index
                version = self._wait_for_version(k)
                if version is None:
                    return
                item = Produced(k, version, None)  # type: ignore[arg-type]
                item.scored = self._produce(item)
                item.state_after = {
                    "prompts": self.trainer.prompts.state_dict(),
                    "generator": self.generator.get_state(),
                }
                with self.cond:
                    self.ready[k] = item
                    self.next_index = k + 1
                    self.cond.notify_all()
        except BaseException as err:  # handed to the trainer thread by next()
            with self.cond:
                self.error = err
                self.cond.notify_all()

    def _wait_for_version(self, k: int) -> int | None:
        """Wait until rollout ``k`` may be sampled; load the weights of the version that samples it (colocated:
        exactly ``max(k - s, v0)``; server: the newest). None when stopped."""
        needed = max(k - self.staleness, self.v0)
        start = time.perf_counter()
        with self.cond:
            self.cond.wait_for(lambda: self.published >= needed or self.stop.is_set())
            self.sampler_wait += time.perf_counter() - start
            if self.stop.is_set():
                return None
            if not self.colocated:
                return self.published
            snapshot = self.snapshots[needed]
            for old in [v for v in self.snapshots if v < needed]:
                del self.snapshots[old]
        if self.loaded != needed:
            params = dict(self.sampler.model.named_parameters())
            with torch.no_grad():
                for name, value in snapshot.items():
                    params[name].copy_(value)
            self.loaded = needed
        return needed

    def _produce(self, item: Produced) -> ScoredRollout:
        """One rollout as the synchronous loop samples it (``GRPOTrainer.sample_and_score``), on this thread's
        sampler, generator, timings and reward statistics."""
        if not self.args.dynamic_sampling:
            return self._round(item)
        pad_id = self.trainer.tokenizer.pad_token_id
        g, rounds = self.args.num_generations, self.args.max_generation_rounds
        return sample_informative(lambda: self._round(item), g, rounds, pad_id)

    def _round(self, item: Produced) -> ScoredRollout:
        trainer, g = self.trainer, self.args.num_generations
        rows = [trainer.dataset.rows[i] for i in trainer.prompts.next_indices()]
        start = time.perf_counter()
        rollout = self.sampler.generate([r["prompt_ids"] for r in rows], g)
        item.timings["sample"] = item.timings.get("sample", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        per_func, rewards = score_rollout(
            rows, rollout, g, self.reward_funcs, trainer.reward_weights, item.reward_stats
        )
        item.timings["rewards"] = item.timings.get("rewards", 0.0) + time.perf_counter() - start
        return ScoredRollout(rows, rollout, per_func, rewards)
