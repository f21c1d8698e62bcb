"""The GRPO training loop (Shao et al. 2024, "DeepSeekMath", sec. 4.1; DeepSeek-AI 2025, "DeepSeek-R1").

One rollout, read top to bottom in :meth:`GRPOTrainer.train`:
sample prompts -> rollout (G completions each) -> rewards -> group-relative advantages ->
old and reference log-probs -> num_iterations x steps_per_generation optimizer steps -> sync the
sampler -> log -> checkpoint.
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager

import torch
from accelerate.utils import gather_object, set_seed
from transformers import get_scheduler

import rewards as reward_library
from grpo import checkpoint as ckpt
from grpo.algo.advantages import group_advantages, informative_groups
from grpo.algo.loss import policy_loss
from grpo.config import DataArguments, GRPOArguments, ModelArguments, config_dict, save_config
from grpo.curriculum import build_prompt_sampler
from grpo.data import build_prompt_dataset
from grpo.distributed import build_accelerator, gathered_for_generation, is_deepspeed, whole_models
from grpo.export import load_weights_into
from grpo.guards import RunGuard, halve_learning_rate
from grpo.logprobs import completion_logprobs, completion_logprobs_shared_prompts
from grpo.model import load_policy, load_reference, load_tokenizer
from grpo.run_logger import RunLogger, tracker_names
from grpo.samplers import build_run_sampler
from grpo.scoring import build_reward_funcs, combine_rewards, reward_name, score_completions
from grpo.train_metrics import rollout_metrics
from grpo.types import Rollout, TrainBatch, concat_rollouts, select_rollout, stack_or_none


def resolve_mixed_precision(choice: str) -> str:
    """``auto`` -> ``bf16`` on a GPU that supports it, ``no`` (fp32) otherwise."""
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class GRPOTrainer:
    """Group Relative Policy Optimization on one process or under ``accelerate launch``."""

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, args: GRPOArguments):
        self.model_args, self.data_args, self.args = model_args, data_args, args
        self.accelerator = build_accelerator(
            args, resolve_mixed_precision(args.mixed_precision), tracker_names(args.report_to) or None
        )
        set_seed(args.seed)
        self.tokenizer = load_tokenizer(model_args)
        self.dataset = build_prompt_dataset(data_args, self.tokenizer)
        resume = args.resume_from_checkpoint and ckpt.resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
        with whole_models(self.accelerator):  # ZeRO-3: prepare partitions the policy; the reference stays whole
            policy = load_policy(model_args)
            self.ref_model = load_reference(policy, model_args, args.beta)
            if resume:  # weights before prepare, so DeepSpeed partitions the restored ones
                load_weights_into(policy, os.path.join(resume, "model"))
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)
        self.reward_funcs = build_reward_funcs(data_args, args)
        self._check_think_prefill()
        self.reward_names = [reward_name(f) for f in self.reward_funcs]
        self.reward_weights = torch.tensor(args.reward_weights or [1.0] * len(self.reward_funcs))
        optimizer = torch.optim.AdamW(
            [p for p in policy.parameters() if p.requires_grad],
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            weight_decay=args.weight_decay,
        )
        self.policy, self.optimizer = self.accelerator.prepare(policy, optimizer)
        # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper would step it once per
        # process). Built on the prepared optimizer, the one that steps (with DeepSpeed's CPU offload: its CPU Adam).
        schedule = {"constant": "constant_with_warmup", "cosine": "cosine"}[args.lr_scheduler_type]
        self.scheduler = get_scheduler(
            schedule, self.optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps
        )
        # Each distinct prompt through the model once per micro-batch (its G completions share its KV cache):
        # one process only (two forward calls per backward do not mix with DDP's or DeepSpeed's hooks), and not with
        # gradient checkpointing (which turns the cache off).
        self.logprob_fn = (
            completion_logprobs_shared_prompts
            if self.accelerator.num_processes == 1
            and not model_args.gradient_checkpointing
            and not is_deepspeed(self.accelerator)
            else completion_logprobs
        )
        self.sampler = build_run_sampler(self.unwrapped_policy, self.tokenizer, args)
        self.prompts = build_prompt_sampler(args, len(self.dataset), self.accelerator, self.reward_names)
        self.guard = RunGuard(args, self._sum_over_processes if self.accelerator.num_processes > 1 else None)
        self.global_step = 0
        self.timings: dict[str, float] = {}
        if resume:
            self.load_checkpoint(resume)
            self.sync_sampler()  # a sampler holding its own copy of the weights gets the restored ones
        self._start_output()

    def _check_think_prefill(self) -> None:
        """Warn when the prompt opens <think> (say, a chat template that pre-fills it) but the recipe does not say so:
        the format rewards would then score every completion 0."""
        if not self.data_args.think_prefill and reward_library.detect_think_prefill(self.dataset.rows[0]["prompt"]):
            warnings.warn(
                "the rendered prompt already opens <think>; set think_prefill: true so the format "
                "rewards read completions as starting inside the thinking block",
                stacklevel=2,
            )

    # --- the loop -------------------------------------------------------------------------------

    def train(self) -> None:
        """Train until ``max_steps`` optimizer steps; checkpoint every ``save_steps`` and at the end."""
        try:
            while self.global_step < self.args.max_steps:
                self.timings = {}
                start = time.perf_counter()
                rows, rollout, per_func, rewards = self.sample_and_score()  # prompts -> G completions -> rewards
                advantages = self.compute_advantages(rewards)  # group-relative advantages
                batch = self.make_batch(rollout, advantages)  # old and reference log-probs
                update = self.update(batch)  # mu x steps_per_generation steps
                self.sync_sampler()  # new weights to the sampler
                evaluation = self.evaluate()  # held-out slices, every eval_steps
                step_time = time.perf_counter() - start
                record = self.log(rows, rollout, per_func, rewards, advantages, update, step_time, evaluation)
                if self.watch_for_collapse(record):  # collapse guard: go on, roll back (True) or stop (raises)
                    continue
                if self._checkpoint_due():
                    self.save_checkpoint()
            if not self._checkpoint_due():  # the final state, unless just saved
                self.save_checkpoint()
        finally:
            self.logger.close()

    def _checkpoint_due(self) -> bool:
        """Every ``save_steps``, unless the collapse guard is counting a bad streak (the last good checkpoint
        must not be rotated away)."""
        args = self.args
        return bool(args.save_steps and self.global_step % args.save_steps == 0 and self.guard.healthy)

    # --- one named call per arrow ---------------------------------------------------------------

    def sample_and_score(self) -> tuple[list[dict], Rollout, torch.Tensor, torch.Tensor]:
        """Sample prompts, generate G completions for each and score them.

        With ``dynamic_sampling`` (DAPO, Yu et al. 2025, sec. 3.2), groups whose rewards are all equal
        are dropped and further rounds of B prompts are sampled until B informative groups are collected
        or ``max_generation_rounds`` is reached; a batch still short is topped up with dropped groups
        (advantage 0). The counts go to ``self.sampling_stats`` and the metrics.
        """
        args, g = self.args, self.args.num_generations
        rounds = [self._sample_round()]
        wanted = len(rounds[0][0])
        while (
            args.dynamic_sampling
            and len(rounds) < args.max_generation_rounds
            and self._any_process_short(rounds, wanted)
        ):
            rounds.append(self._sample_round())
        if len(rounds) == 1 and not args.dynamic_sampling:
            self.sampling_stats = {}
            return rounds[0][:4]
        rows = [row for r in rounds for row in r[0]]
        rollout = concat_rollouts([r[1] for r in rounds], self.tokenizer.pad_token_id)
        per_func, rewards = torch.cat([r[2] for r in rounds]), torch.cat([r[3] for r in rounds])
        informative = torch.cat([r[4] for r in rounds])  # [groups sampled]
        groups = torch.cat([informative.nonzero(), (~informative).nonzero()]).squeeze(1)[:wanted]  # kept first
        seq = (groups[:, None] * g + torch.arange(g)).reshape(-1)  # [B*G] rows of the chosen groups
        self.sampling_stats = {
            "dynamic_sampling/rounds": len(rounds),
            "dynamic_sampling/dropped_groups": int((~informative).sum()),
            "dynamic_sampling/filled_groups": max(wanted - int(informative.sum()), 0),
        }
        return [rows[i] for i in groups.tolist()], select_rollout(rollout, seq), per_func[seq], rewards[seq]

    def _any_process_short(self, rounds: list, wanted: int) -> bool:
        """True while any process has fewer than ``wanted`` informative groups: all processes then sample
        another round together, so their prompt positions stay equal."""
        short = torch.tensor(float(sum(int(r[4].sum()) for r in rounds) < wanted), device=self.accelerator.device)
        return bool(self.accelerator.reduce(short, reduction="sum") > 0)

    def _sample_round(self):
        """One round: B prompts -> G completions each -> rewards; plus which groups are informative ``[B]``."""
        rows = self.next_prompts()  # sample prompts
        rollout = self.generate(rows)  # rollout
        per_func, rewards = self.score(rows, rollout)  # rule-based rewards
        self.prompts.observe(per_func, self.reward_names)  # curriculum: the drawn prompts' pass rates
        return rows, rollout, per_func, rewards, informative_groups(rewards, self.args.num_generations)

    def next_prompts(self) -> list[dict]:
        """This process's B prompts (rows of the prompt data set)."""
        return [self.dataset.rows[i] for i in self.prompts.next_indices()]

    def generate(self, rows: list[dict]) -> Rollout:
        """G completions per prompt from the sampler."""
        with self.timer("sample"), gathered_for_generation(self.policy, self.accelerator):  # ZeRO-3: whole weights
            return self.sampler.generate([r["prompt_ids"] for r in rows], self.args.num_generations)

    def score(self, rows: list[dict], rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards per function ``[N, F]`` (NaN = unverifiable) and their weighted sum ``[N]``."""
        g = self.args.num_generations
        with self.timer("rewards"):
            columns = {name: [r[name] for r in rows for _ in range(g)] for name in self.dataset.columns}
            columns["prompts"] = columns.pop("prompt")
            columns["completion_ids"] = [
                ids[m.bool()].tolist() for ids, m in zip(rollout.completion_ids, rollout.completion_mask)
            ]
            columns["truncated"] = rollout.truncated.tolist()
            per_func = score_completions(self.guard.screen(self.reward_funcs), rollout.completions, columns)  # [N, F]
            return per_func, combine_rewards(per_func, self.reward_weights)  # [N, F], [N]

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
        with self.timer("sync"):
            self.sync_time = self.sampler.sync_weights(self.unwrapped_policy)

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
        num_sequences = len(minibatch) * acc.num_processes
        num_tokens = float(acc.reduce(minibatch.completion_mask.sum(), reduction="sum"))
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
                    loss_type=args.loss_type,
                    epsilon_low=args.epsilon_low,
                    epsilon_high=args.epsilon_high,
                    delta=args.delta,
                    ref_logprobs=micro.ref_logprobs,
                    beta=args.beta,
                    kl_estimator=args.kl_estimator,
                    max_completion_length=args.max_completion_length,
                    num_sequences=num_sequences,
                    num_tokens=num_tokens,
                    entropies=entropy,
                    entropy_coef=args.entropy_coef,
                    top_entropy_quantile=args.top_entropy_quantile,
                    sampler_logprobs=micro.sampler_logprobs,
                    tis_cap=args.tis_cap,
                    tis_level=args.tis_level,
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

    def _sum_over_processes(self, value: float) -> float:
        return float(self.accelerator.reduce(torch.tensor(value, device=self.accelerator.device), "sum"))

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
        parts, width = [], batch.completion_ids.shape[1]
        for chunk in batch.split(self.args.per_device_train_batch_size):  # trimmed: no all-padding columns
            with self._reference_context(model) as m:
                lp, _ = self.logprob_fn(
                    m,
                    chunk.prompt_ids,
                    chunk.prompt_mask,
                    chunk.completion_ids,
                    chunk.completion_mask,
                    self.args.temperature,
                )
            parts.append(torch.nn.functional.pad(lp, (0, width - lp.shape[1])))  # [c, T]
        return stack_or_none(parts)

    @contextmanager
    def _reference_context(self, model):
        if model is None:  # LoRA: the reference is the base model, i.e. the policy with the adapter disabled
            with self.unwrapped_policy.disable_adapter():
                yield self.policy
        else:
            yield model

    # --- logging and checkpoints ----------------------------------------------------------------

    @property
    def unwrapped_policy(self):
        return self.accelerator.unwrap_model(self.policy)

    @contextmanager
    def timer(self, phase: str):
        start = time.perf_counter()
        yield
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start

    def _start_output(self) -> None:
        args = self.args
        if self.accelerator.is_main_process:
            os.makedirs(args.output_dir, exist_ok=True)
            save_config(os.path.join(args.output_dir, "config.yaml"), self.model_args, self.data_args, args)
        config = config_dict(self.model_args, self.data_args, args)
        config["data"]["num_prompts"], config["data"]["num_dropped_prompts"] = (
            len(self.dataset),
            self.dataset.num_dropped,
        )
        self.logger = RunLogger(
            self.accelerator,
            args.output_dir,
            args.report_to,
            args.project,
            args.run_name or os.path.basename(os.path.abspath(args.output_dir)),
            config,
            args.max_steps,
            self.global_step,
            args.disable_tqdm,
        )

    def evaluate(self) -> dict[str, float]:
        """``eval/<benchmark>/...`` metrics on the held-out slices when ``eval_steps`` divides the step (main process)."""
        args = self.args
        if not args.eval_steps or self.global_step % args.eval_steps or not self.accelerator.is_main_process:
            return {}
        from grpo.eval.benchmarks import load_benchmarks
        from grpo.eval.heldout import evaluate_during_training

        if not hasattr(self, "eval_rows"):
            self.eval_rows = load_benchmarks(
                args.eval_benchmarks, self.tokenizer, self.data_args, limit=args.eval_limit
            )
        with self.timer("eval"):
            return evaluate_during_training(
                self.unwrapped_policy,
                self.tokenizer,
                self.eval_rows,
                self.reward_funcs,
                num_samples=args.eval_num_samples,
                max_completion_length=args.max_completion_length,
                sampler=self.sampler,
                seed=args.seed,
            )

    def log(
        self,
        rows,
        rollout: Rollout,
        per_func,
        rewards,
        advantages,
        update: list[dict],
        step_time: float,
        evaluation: dict[str, float],
    ) -> dict:
        """Gather the rollout from every process, compute its metrics and write them (main process); returns
        the metrics (the same on every process, but for ``eval/*``)."""
        acc, g = self.accelerator, self.args.num_generations
        lengths = rollout.completion_mask.sum(1)  # [N] tokens
        gathered = [acc.gather(t.to(acc.device)).cpu() for t in (rewards, per_func, lengths, rollout.truncated)]
        texts = gather_object(rollout.completions) if acc.num_processes > 1 else rollout.completions
        record = rollout_metrics(*gathered[:2], self.reward_names, gathered[2], gathered[3], texts, g)
        for key in update[0]:  # mean over the optimizer steps of this rollout
            record[key] = sum(u[key] for u in update) / len(update)
        sampled_tokens = float(gathered[2].sum())
        record.update(
            {
                "lr": self.scheduler.get_last_lr()[0],
                "num_processes": acc.num_processes,
                "sample_tokens_per_s": sampled_tokens / max(self.timings.get("sample", 0.0) * acc.num_processes, 1e-9),
                "step_time_s": step_time,
                "sync_time_s": self.sync_time,
                "num_prompts_dropped": self.dataset.num_dropped,
                **self.sampling_stats,
                **self.prompts.metrics(),
                **self.guard.metrics(),
                **evaluation,
                **{f"time/{k}_s": v for k, v in self.timings.items()},
            }
        )
        if self.global_step % self.args.logging_steps:
            return record
        n = min(self.args.num_completions_to_log, len(rollout))
        samples = [
            {
                "prompt": rows[i // g]["prompt"],
                "completion": rollout.completions[i],
                "solution": rows[i // g]["solution"],
                "reward": _num(rewards[i]),
                "advantage": _num(advantages[i]),
                **{f"rewards/{name}": _num(per_func[i, j]) for j, name in enumerate(self.reward_names)},
            }
            for i in range(n)
        ]
        self.logger.log(self.global_step, record, gathered[2].tolist(), samples)
        return record

    def save_checkpoint(self) -> str:
        """Write ``checkpoint-<global_step>`` atomically (every process takes part); returns its path."""
        state = {"global_step": self.global_step, **self.prompts.state_dict()}
        path = ckpt.save_training_checkpoint(
            self.accelerator,
            self.policy,
            self.optimizer,
            self.scheduler,
            self.tokenizer,
            (self.model_args, self.data_args, self.args),
            state,
            self.args.output_dir,
            self.args.save_total_limit,
        )
        self.guard.saved(path)
        return path

    def load_checkpoint(self, folder: str) -> None:
        """Restore optimizer, scheduler, RNG states, step and data position (weights: before ``prepare``)."""
        state = ckpt.load_training_state(self.accelerator, self.policy, self.optimizer, self.scheduler, folder)
        self.global_step = state["global_step"]
        self.prompts.load_state_dict(state)
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


def _num(x: torch.Tensor) -> float | None:
    value = float(x)
    return None if value != value else value
