"""The GRPO training loop (Shao et al. 2024, "DeepSeekMath", sec. 4.1; DeepSeek-AI 2025, "DeepSeek-R1").

One rollout, read top to bottom in :meth:`GRPOTrainer.train`:
sample prompts -> rollout (G completions each) -> rewards -> group-relative advantages ->
old and reference log-probs -> num_iterations x steps_per_generation optimizer steps -> sync the
sampler -> log -> checkpoint. With ``async_rollouts`` the rollout comes from a producer thread that samples ahead
with bounded staleness (:mod:`grpo.async_rollouts`).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext

import torch
from accelerate.utils import gather_object, set_seed

from grpo import checkpoint as ckpt
from grpo.algo.advantages import group_advantages
from grpo.algo.loss import GlobalCounts, policy_loss
from grpo.async_rollouts import AsyncRollouts
from grpo.config import ConfigError, DataArguments, GRPOArguments, ModelArguments, VLLMArguments
from grpo.curriculum import build_prompt_sampler
from grpo.data import build_prompt_dataset, warn_if_think_prefilled
from grpo.distributed import any_process, build_accelerator, gathered_for_generation, is_deepspeed, whole_models
from grpo.dynamic_sampling import sample_informative
from grpo.eval.heldout import HeldoutEvaluator
from grpo.export import load_weights_into
from grpo.guards import RunGuard, halve_learning_rate
from grpo.logprobs import batch_logprobs, logprob_function
from grpo.model import load_policy, load_reference, load_tokenizer, resolve_mixed_precision
from grpo.optim import build_optimizer, build_scheduler
from grpo.run_logger import open_run_logger, tracker_names
from grpo.samplers import build_run_sampler
from grpo.scoring import build_reward_funcs, reward_name, score_rollout
from grpo.train_metrics import logged_completions, rollout_metrics
from grpo.types import Rollout, ScoredRollout, StepResult, TrainBatch


class GRPOTrainer:
    """Group Relative Policy Optimization on one process or under ``accelerate launch``."""

    def __init__(
        self,
        model_args: ModelArguments,
        data_args: DataArguments,
        args: GRPOArguments,
        vllm_args: VLLMArguments | None = None,
    ):
        vllm_args = VLLMArguments() if vllm_args is None else vllm_args
        self.model_args, self.data_args, self.args, self.vllm_args = model_args, data_args, args, vllm_args
        self.loss_settings = args.loss_settings()  # checked once
        self.accelerator = build_accelerator(
            args, resolve_mixed_precision(args.mixed_precision), tracker_names(args.report_to) or None
        )
        set_seed(args.seed)
        self.tokenizer = load_tokenizer(model_args)
        self.dataset = build_prompt_dataset(data_args, self.tokenizer)
        resume = ckpt.resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
        policy, self.ref_model = self._load_models(resume)
        self.reward_funcs = self._build_rewards()
        self.reward_names = [reward_name(f) for f in self.reward_funcs]
        self.reward_weights = torch.tensor(args.reward_weights or [1.0] * len(self.reward_funcs))
        self.reward_stats: dict[str, float] = {}  # rewards/<name>/time_s and /timeouts, summed until logged
        self.policy, self.optimizer = self.accelerator.prepare(policy, build_optimizer(policy, args))
        self.scheduler = build_scheduler(self.optimizer, args)  # on the prepared optimizer; stepped by hand
        self.logprob_fn = logprob_function(
            self.accelerator.num_processes, model_args.gradient_checkpointing, is_deepspeed(self.accelerator)
        )
        self.sampler = build_run_sampler(self.unwrapped_policy, self.tokenizer, args, vllm_args)
        self.prompts = build_prompt_sampler(args, len(self.dataset), self.accelerator, self.reward_names)
        self.guard = RunGuard(args, self.accelerator)
        self.global_step = 0
        self.timings: dict[str, float] = {}  # seconds per phase of the current step
        self.sync_time = 0.0  # seconds the last weight sync took
        self.evaluator = HeldoutEvaluator(args, data_args, self.tokenizer, self.reward_funcs)  # every eval_steps
        self.rollouts = AsyncRollouts(self) if args.async_rollouts else None  # a producer thread, bounded staleness
        if resume:
            self.load_checkpoint(resume)
            self.sync_sampler()  # a sampler holding its own copy of the weights gets the restored ones
        self.logger = open_run_logger(self.accelerator, self.configs, self.dataset, self.global_step)

    def _load_models(self, resume: str | None) -> tuple:
        """The policy (with the weights of ``resume``, if any) and the reference model (None when beta = 0 or
        with LoRA, whose reference is the policy with its adapter off), before ``prepare``."""
        with whole_models(self.accelerator):  # ZeRO-3: prepare partitions the policy; the reference stays whole
            policy = load_policy(self.model_args)
            ref_model = load_reference(policy, self.model_args, self.args.beta)
            if resume:  # weights before prepare, so DeepSpeed partitions the restored ones
                load_weights_into(policy, os.path.join(resume, "model"))
        return policy, None if ref_model is None else ref_model.to(self.accelerator.device)

    def _build_rewards(self) -> list:
        """The recipe's reward functions (:func:`grpo.scoring.build_reward_funcs`); a bad name or setting is a
        :class:`ConfigError`."""
        try:
            funcs = build_reward_funcs(self.data_args, self.args)
        except ValueError as err:
            raise ConfigError(f"reward_funcs / reward_kwargs: {err}") from err
        warn_if_think_prefilled(self.dataset, self.data_args.think_prefill)
        return funcs

    # --- the loop -------------------------------------------------------------------------------

    def train(self) -> None:
        """Train until ``max_steps`` optimizer steps; checkpoint every ``save_steps`` and at the end."""
        try:
            while self.global_step < self.args.max_steps:
                self.timings.clear()
                start = time.perf_counter()
                scored = self.rollouts.next() if self.rollouts else self.sample_and_score()  # G completions, rewards
                advantages = self.compute_advantages(scored.rewards)  # group-relative advantages
                batch = self.make_batch(scored.rollout, advantages)  # old and reference log-probs
                update = self.update(batch)  # mu x steps_per_generation steps
                self.sync_sampler()  # new weights to the sampler
                evaluation = self.evaluate()  # held-out slices, every eval_steps
                record = self.log(StepResult(scored, advantages, update, time.perf_counter() - start, evaluation))
                if self.watch_for_collapse(record):  # collapse guard: go on, roll back (True) or stop (raises)
                    continue
                if self.guard.checkpoint_due(self.global_step):  # every save_steps, unless in a bad streak
                    self.save_checkpoint()
            if not self.guard.checkpoint_due(self.global_step):  # the final state, unless just saved
                self.save_checkpoint()
        finally:
            if self.rollouts:
                self.rollouts.close()
            self.logger.close()

    # --- one named call per arrow ---------------------------------------------------------------

    def sample_and_score(self) -> ScoredRollout:
        """Sample B prompts, generate G completions for each and score them; with ``dynamic_sampling``, more
        rounds until B informative groups (:mod:`grpo.dynamic_sampling`)."""
        if not self.args.dynamic_sampling:
            return self._sample_round()
        return sample_informative(
            self._sample_round,
            self.args.num_generations,
            self.args.max_generation_rounds,
            self.tokenizer.pad_token_id,
            lambda short: any_process(self.accelerator, short),  # all processes sample the same rounds
        )

    def _sample_round(self) -> ScoredRollout:
        """One round: B prompts -> G completions each -> rewards."""
        rows = self.next_prompts()  # sample prompts
        rollout = self.generate(rows)  # rollout
        per_func, rewards = self.score(rows, rollout)  # rule-based rewards
        self.prompts.observe(per_func, self.reward_names)  # curriculum: the drawn prompts' pass rates
        return ScoredRollout(rows, rollout, per_func, rewards)

    def next_prompts(self) -> list[dict]:
        """This process's B prompts (rows of the prompt data set)."""
        return [self.dataset.rows[i] for i in self.prompts.next_indices()]

    def generate(self, rows: list[dict]) -> Rollout:
        """G completions per prompt from the sampler (ZeRO-3: from the whole weights, when it uses the policy)."""
        gathered = gathered_for_generation(self.policy, self.accelerator, self.sampler.generates_with_policy)
        with self.timer("sample"), gathered:
            return self.sampler.generate([r["prompt_ids"] for r in rows], self.args.num_generations)

    def score(self, rows: list[dict], rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards per function ``[N, F]`` (NaN = unverifiable) and their weighted sum ``[N]``."""
        with self.timer("rewards"):
            funcs = self.guard.screen(self.reward_funcs)  # non-finite values: counted, unverifiable
            g, weights = self.args.num_generations, self.reward_weights
            return score_rollout(rows, rollout, g, funcs, weights, self.reward_stats)  # [N, F], [N]

    def compute_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """``[N]`` advantages. Each process holds whole groups, so group statistics are local; with
        ``scale_rewards: batch`` the std is over the global batch, so rewards are gathered first."""
        args, acc = self.args, self.accelerator
        if args.scale_rewards != "batch" or acc.num_processes == 1:
            return group_advantages(rewards, args.num_generations, args.scale_rewards, args.advantage_eps)
        everyone = acc.gather(rewards.to(acc.device)).cpu()  # [N * processes]
        advantages = group_advantages(everyone, args.num_generations, args.scale_rewards, args.advantage_eps)
        return advantages.view(acc.num_processes, -1)[acc.process_index]  # [N]

    @torch.no_grad()
    def make_batch(self, rollout: Rollout, advantages: torch.Tensor) -> TrainBatch:
        """Training tensors on the device, with old log-probs (only off-policy), reference log-probs (beta > 0) and
        the sampler's own log-probs (mismatch metrics, TIS)."""
        device = self.accelerator.device
        mask = rollout.completion_mask.float()  # [N, T]
        if self.args.mask_truncated_completions:
            mask = mask * (~rollout.truncated).float()[:, None]
        batch = TrainBatch(
            rollout.prompt_ids.to(device),
            rollout.prompt_mask.to(device),
            rollout.completion_ids.to(device),
            mask.to(device),
            advantages.to(device),
            sampler_logprobs=None if rollout.sampler_logprobs is None else rollout.sampler_logprobs.to(device),
        )
        off_policy = self.args.num_iterations > 1 or self.args.steps_per_generation > 1
        with self.timer("logprobs"):
            if off_policy:
                batch.old_logprobs = self._logprobs_over(batch, self.policy)
            if self.args.beta > 0:
                batch.ref_logprobs = self._logprobs_over(batch, self.ref_model)
        return batch

    def update(self, batch: TrainBatch) -> list[dict[str, float]]:
        """``num_iterations`` passes; each pass takes ``steps_per_generation`` optimizer steps on mini-batches."""
        minibatch_size = len(batch) // self.args.steps_per_generation
        stats = []
        with self.timer("update"):
            for _ in range(self.args.num_iterations):
                for minibatch in batch.split(minibatch_size):
                    stats.append(self.optimizer_step(minibatch))
        return stats

    def sync_sampler(self) -> None:
        """New weights to the sampler (async: published to the producer as the next policy version)."""
        with self.timer("sync"):
            self.sync_time = self.syncer.sync_weights(self.unwrapped_policy)  # seconds, as the sampler counts

    @property
    def syncer(self):
        """What takes new weights: the sampler, or with ``async_rollouts`` the producer (which also has
        ``last_sync_bytes``)."""
        return self.rollouts or self.sampler

    # --- the optimizer step ---------------------------------------------------------------------

    def optimizer_step(self, minibatch: TrainBatch) -> dict[str, float]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches.

        The loss of each micro-batch is normalised by counts over the whole global mini-batch
        (sequences, tokens, all processes), so the accumulated gradient equals the full-batch gradient.
        ``accelerator.backward`` divides by the accumulation steps and DDP averages over processes (under
        DeepSpeed its engine does both): the factor below undoes them (tests/test_distributed.py).
        """
        acc = self.accelerator
        args = self.args
        counts = GlobalCounts(  # over the global mini-batch
            num_sequences=len(minibatch) * acc.num_processes,
            num_tokens=float(acc.reduce(minibatch.completion_mask.sum(), reduction="sum")),
        )
        scale = args.gradient_accumulation_steps * acc.num_processes
        totals: dict[str, float] = {}
        for micro in minibatch.split(args.per_device_train_batch_size):
            with acc.accumulate(self.policy):
                logprobs, entropy = self.logprob_fn(  # entropy: a detached metric unless the bonus is on
                    self.policy,
                    micro.prompt_ids,
                    micro.prompt_mask,
                    micro.completion_ids,
                    micro.completion_mask,
                    args.temperature,
                    with_entropy=True,
                    entropy_grad=args.entropy_coef != 0,
                )
                loss, metrics = policy_loss(
                    logprobs,
                    micro.old_logprobs,
                    micro.advantages,
                    micro.completion_mask,
                    self.loss_settings,
                    ref_logprobs=micro.ref_logprobs,
                    entropies=entropy,
                    sampler_logprobs=micro.sampler_logprobs,
                    counts=counts,
                )
                acc.backward(self.guard.loss_for_backward(loss) * scale)  # non-finite: NaN gradient, step skipped
                tokens = float(micro.completion_mask.sum())
                totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
                for key, value in metrics.items():  # token-weighted means over the micro-batches
                    totals[key] = totals.get(key, 0.0) + value * tokens
                totals["_tokens"] = totals.get("_tokens", 0.0) + tokens
                if acc.sync_gradients:
                    totals["grad_norm"] = self._clip_and_step()
        grad_norm, keys = totals.pop("grad_norm"), sorted(totals)  # the rest: sums over this process's micro-batches
        summed = acc.reduce(torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=acc.device), "sum")
        totals = dict(zip(keys, summed.tolist()))  # sums over all processes
        tokens = max(totals.pop("_tokens"), 1.0)
        return {"grad_norm": grad_norm, **{k: (v if k == "loss" else v / tokens) for k, v in totals.items()}}

    def _clip_and_step(self) -> float:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        max_norm = self.args.max_grad_norm if self.args.max_grad_norm > 0 else float("inf")
        grad_norm = self.accelerator.clip_grad_norm_(params, max_norm)  # DeepSpeed: clipped in backward, norm read
        if self.guard.allow_step(grad_norm):  # a non-finite gradient norm never reaches the weights
            self.optimizer.step()
        grad_norm = float("nan") if grad_norm is None else float(grad_norm)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return grad_norm

    @torch.no_grad()
    def _logprobs_over(self, batch: TrainBatch, model) -> torch.Tensor:
        """Log-probs ``[N, T]`` of the whole batch under ``model`` (None = the LoRA policy with its adapter off)."""
        off = self.unwrapped_policy.disable_adapter() if model is None else nullcontext()  # LoRA: base = reference
        with off:
            model = self.policy if model is None else model
            return batch_logprobs(
                self.logprob_fn, model, batch, self.args.per_device_train_batch_size, self.args.temperature
            )

    # --- logging and checkpoints ----------------------------------------------------------------

    @property
    def configs(self) -> tuple:
        """The run's argument dataclasses (model, data, GRPO, vLLM), as config.yaml holds them."""
        return self.model_args, self.data_args, self.args, self.vllm_args

    @property
    def unwrapped_policy(self):
        return self.accelerator.unwrap_model(self.policy)

    @contextmanager
    def timer(self, phase: str):
        start = time.perf_counter()
        yield
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start

    def evaluate(self) -> dict[str, float]:
        """``eval/<benchmark>/...`` metrics on the held-out slices when ``eval_steps`` divides the step (main process)."""
        if not self.evaluator.due(self.global_step) or not self.accelerator.is_main_process:
            return {}
        with self.timer("eval"):
            return self.evaluator(self.unwrapped_policy, self.sampler)

    def log(self, result: StepResult) -> dict:
        """Gather the rollout from every process and compute its metrics (every rollout: the collapse guard reads
        them); write them every ``logging_steps`` (main process). Returns them (the same on every process, but for
        ``eval/*``)."""
        acc, g, rollout = self.accelerator, self.args.num_generations, result.scored.rollout
        lengths = rollout.completion_mask.sum(1)  # [N] tokens
        tensors = (result.scored.rewards, result.scored.per_func, lengths, rollout.truncated)
        rewards, per_func, lengths, truncated = [acc.gather(t.to(acc.device)).cpu() for t in tensors]
        texts = gather_object(rollout.completions) if acc.num_processes > 1 else rollout.completions
        record = rollout_metrics(rewards, per_func, self.reward_names, lengths, truncated, texts, g)
        for key in result.update[0]:  # mean over the optimizer steps of this rollout
            record[key] = sum(u[key] for u in result.update) / len(result.update)
        record.update(
            {
                "lr": self.scheduler.get_last_lr()[0],
                "num_processes": acc.num_processes,
                "sample_tokens_per_s": float(lengths.sum())
                / max(self.timings.get("sample", 0.0) * acc.num_processes, 1e-9),
                "step_time_s": result.step_time,
                "sync_time_s": self.sync_time,
                "sync_bytes": self.syncer.last_sync_bytes,
                "num_prompts_dropped": self.dataset.num_dropped,
                **result.scored.sampling_stats,
                **self.prompts.metrics(),
                **self.guard.metrics(),
                **self.reward_stats,
                **result.evaluation,
                **{f"time/{k}_s": v for k, v in self.timings.items()},
            }
        )
        if self.global_step % self.args.logging_steps == 0:
            completions = logged_completions(result, g, self.args.num_completions_to_log, self.reward_names)
            self.logger.log(self.global_step, record, lengths.tolist(), completions)
            self.reward_stats.clear()
        return record

    def save_checkpoint(self) -> str:
        """Write ``checkpoint-<global_step>`` atomically (every process takes part); returns its path."""
        prompts, extra = self.rollouts.checkpoint_state() if self.rollouts else (self.prompts.state_dict(), {})
        state = {"global_step": self.global_step, **prompts}
        path = ckpt.save_training_checkpoint(
            self.accelerator,
            self.policy,
            self.optimizer,
            self.scheduler,
            self.tokenizer,
            self.configs,
            state,
            self.args.output_dir,
            self.args.save_total_limit,
            extra,
        )
        self.guard.saved(path)
        return path

    def load_checkpoint(self, folder: str) -> None:
        """Restore optimizer, scheduler, RNG states, step and data position (weights: before ``prepare``)."""
        state = ckpt.load_training_state(self.accelerator, self.policy, self.optimizer, self.scheduler, folder)
        self.global_step = state["global_step"]
        self.prompts.load_state_dict(state)
        if self.rollouts:  # the queued rollouts and the producer's state
            self.rollouts.load(folder)
        self.guard.last_good = folder

    def watch_for_collapse(self, record: dict) -> bool:
        """The collapse guard's verdict on this rollout: go on (False), stop (raises ``TrainingCollapsed``) or
        roll back to the last good checkpoint with the learning rate halved (True)."""
        folder = self.guard.check(self.global_step, record)
        if folder is None:
            return False
        self.accelerator.print(self.guard.message)
        base_lrs = list(self.scheduler.base_lrs)
        if not is_deepspeed(self.accelerator):  # DeepSpeed's engine restores its weights in load_checkpoint
            load_weights_into(self.unwrapped_policy, os.path.join(folder, "model"))
        self.load_checkpoint(folder)
        halve_learning_rate(self.scheduler, self.optimizer, base_lrs)
        self.sync_sampler()
        return True
