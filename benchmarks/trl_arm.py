"""The trl arm of benchmarks/bench_vs_trl.py: trl's GRPOTrainer at our recipe's settings, timed the same way."""

from __future__ import annotations

import math
import time


def trl_dataset(args, ours, model_args, data_args):
    """Our tokenizer and our prompts in our order, written out in full: trl reads the data set in order
    (``shuffle_dataset=False``), so both trainers see the same prompts at every step. Raises ``RuntimeError`` when
    trl would tokenize a prompt differently from grpo."""
    from datasets import Dataset

    from grpo.data import PromptSampler, build_prompt_dataset
    from grpo.model import load_tokenizer

    tokenizer = load_tokenizer(model_args)
    prompts = build_prompt_dataset(data_args, tokenizer)
    order = PromptSampler(len(prompts), ours.prompts_per_rollout, ours.seed)
    rollouts = math.ceil(args.steps / args.num_iterations) + 1
    rows = [prompts.rows[i] for _ in range(rollouts) for i in order.next_indices()]
    dataset = Dataset.from_dict({"prompt": [r["prompt"] for r in rows], "solution": [r["solution"] for r in rows]})
    if tokenizer(rows[0]["prompt"])["input_ids"] != rows[0]["prompt_ids"]:
        raise RuntimeError("trl would tokenize the prompts differently from grpo")
    return tokenizer, dataset


def trl_config(args, ours, output_dir: str):
    """trl's ``GRPOConfig`` with our recipe's settings (``ours``: our GRPOArguments)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=output_dir,
        # the optimizer settings are read from ours (benchmarks.bench_vs_trl.grpo_configs sets them once)
        seed=ours.seed,
        max_steps=ours.max_steps,
        learning_rate=ours.learning_rate,
        lr_scheduler_type=ours.lr_scheduler_type,
        warmup_steps=ours.warmup_steps,
        weight_decay=ours.weight_decay,
        adam_beta1=ours.adam_beta1,
        adam_beta2=ours.adam_beta2,
        adam_epsilon=ours.adam_epsilon,
        max_grad_norm=ours.max_grad_norm,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=ours.per_device_train_batch_size,
        gradient_accumulation_steps=ours.gradient_accumulation_steps,
        steps_per_generation=ours.gradient_accumulation_steps * ours.steps_per_generation,  # trl counts micro-batches
        num_generations=ours.num_generations,
        num_iterations=ours.num_iterations,
        max_completion_length=ours.max_completion_length,
        temperature=ours.temperature,
        top_p=ours.top_p,
        top_k=ours.top_k,
        beta=ours.beta,
        epsilon=ours.epsilon_low,
        epsilon_high=ours.epsilon_high,
        loss_type="grpo",
        scale_rewards="group",
        mask_truncated_completions=False,
        reward_weights=ours.reward_weights,
        shuffle_dataset=False,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
        use_vllm=False,
    )


def run_trl(args, output_dir: str) -> dict:
    """trl's run, timed per optimizer step (callbacks) and per sampler call (``_generate_single_turn``)."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOTrainer as TRLGRPOTrainer

    from benchmarks.bench_vs_trl import grpo_configs
    from grpo.model import load_base_model
    from grpo.scoring import build_reward_funcs

    model_args, data_args, ours = grpo_configs(args, output_dir)
    tokenizer, dataset = trl_dataset(args, ours, model_args, data_args)
    config = trl_config(args, ours, output_dir)
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    reward_funcs = build_reward_funcs(data_args, ours)
    torch.manual_seed(args.seed)
    trainer = TRLGRPOTrainer(
        model=load_base_model(model_args),
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    step_begins, step_ends, samples = [], [], []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            step_begins.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            step_ends.append(time.perf_counter())

    trainer.add_callback(StepTimer())
    generate_single_turn = trainer._generate_single_turn

    def timed_generate(prompt_ids, *a, **k):
        start = time.perf_counter()
        completion_ids, logprobs = generate_single_turn(prompt_ids, *a, **k)
        samples.append(
            {
                "start": start,
                "end": time.perf_counter(),
                "completion_tokens": sum(len(c) for c in completion_ids),
                "prompt_tokens": sum(len(p) for p in prompt_ids),
            }
        )
        return completion_ids, logprobs

    trainer._generate_single_turn = timed_generate
    start = time.perf_counter()
    trainer.train()
    return {"start": start, "step_ends": step_ends, "step_begins": step_begins, "samples": samples}
