"""Our GRPO trainer against trl's GRPOTrainer at the same settings, side by side on one machine.

Both trainers get the same model, the same rendered prompts in the same order, the same reward
functions (``rewards.accuracy_reward`` and ``rewards.format_reward``, bound once by grpo and handed
to both), the same batch geometry, sampling settings, loss (``loss_type="grpo"``,
``scale_rewards="group"``, k3 KL with ``beta``), ``num_iterations``, optimizer settings, LoRA or
full fine-tuning, fp32 on CPU, no checkpoints, no trackers. Runs alternate (ours, trl, ours, trl,
...), each in a fresh subprocess so that peak resident memory is per run.

Timing: the time of an optimizer step is the wall time between the ends of consecutive optimizer
steps (the first from the start of ``train()``), so everything a trainer does per step is counted
(sampling, rewards, log-probs, update, logging). trl 1.16 samples inside ``training_step``
(``_prepare_inputs`` -> ``_generate_and_score_completions``), so its steps include sampling just as
ours do; its ``on_step_begin``/``on_step_end`` durations are reported too. The first step of every
run (warm-up) is left out. Sampling time is measured around the sampler call of each trainer (ours:
``sampler.generate``; trl: ``_generate_single_turn``).

    python benchmarks/bench_vs_trl.py --size tiny --steps 4 --repeats 2 --threads 1
    python benchmarks/bench_vs_trl.py --size smollm2 --lora --steps 6 --repeats 3 --threads 2

The last line printed is one JSON object: ``step_time_ratio`` (ours / trl, median seconds per step),
``peak_rss_ratio``, the other ratios and the raw numbers of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

INSTRUCTION = (
    "Think step by step inside <think> </think> tags, then write only the final number inside <answer> </answer> tags."
)

# Settings per size; every field can be overridden on the command line.
SIZES = {
    "tiny": dict(
        model="tiny-random-llama",
        num_generations=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_completion_length=16,
        temperature=1.0,
        beta=0.04,
        learning_rate=1e-3,
        dataset_size=64,
    ),
    "smollm2": dict(
        model="smollm2-135m-instruct",
        num_generations=8,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=4,
        max_completion_length=96,
        temperature=0.7,
        beta=0.02,
        learning_rate=2e-4,
        dataset_size=2000,
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lora", dest="lora", action="store_true", default=True, help="train a LoRA adapter (default)")
    mode.add_argument("--full", dest="lora", action="store_false", help="train all weights")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first is warm-up)")
    p.add_argument("--repeats", type=int, default=2, help="runs per trainer, alternating ours / trl")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads in every run")
    p.add_argument("--which", default="ours,trl", help="comma-separated subset of ours,trl")
    p.add_argument("--num_generations", type=int)
    p.add_argument("--per_device_train_batch_size", type=int)
    p.add_argument("--gradient_accumulation_steps", type=int)
    p.add_argument("--max_completion_length", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--beta", type=float)
    p.add_argument("--num_iterations", type=int, default=1, help="mu")
    p.add_argument("--learning_rate", type=float)
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--lora_alpha", type=int, default=32)
    p.add_argument("--dataset_size", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--child_out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in SIZES[args.size].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.steps < 2:
        p.error("--steps must be >= 2: the first step is warm-up")
    return args


# --- shared configuration ---------------------------------------------------------------------


def grpo_configs(args, output_dir: str):
    from grpo.config import DataArguments, GRPOArguments, ModelArguments

    model_args = ModelArguments(
        model_name_or_path=args.model,
        use_peft=args.lora,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
    )
    data_args = DataArguments(
        dataset_name="reasoning_gym:basic_arithmetic",
        dataset_size=args.dataset_size,
        dataset_seed=42,
        reasoning_gym_kwargs={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
        prompt_template="chat",
        system_prompt="",
        instruction=INSTRUCTION,
        think_prefill=True,
        max_prompt_length=256,
    )
    train_args = GRPOArguments(
        output_dir=output_dir,
        seed=args.seed,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.99,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        mixed_precision="no",
        num_generations=args.num_generations,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        steps_per_generation=1,
        num_iterations=args.num_iterations,
        sampler="hf",
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        reward_funcs=["accuracy", "format"],
        reward_weights=[1.0, 1.0],
        reward_kwargs={"format": {"strict": False}},
        loss_type="grpo",
        scale_rewards="group",
        epsilon_low=0.2,
        epsilon_high=0.2,
        beta=args.beta,
        kl_estimator="k3",
        mask_truncated_completions=False,
        report_to=["none"],
        disable_tqdm=True,
        save_steps=0,
        num_completions_to_log=0,
        logging_steps=1,
    )
    return model_args, data_args, train_args


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --- the two children -------------------------------------------------------------------------


def run_ours(args, output_dir: str) -> dict:
    """Our trainer's run, timed per optimizer step and per sampler call."""
    import torch

    from grpo.trainer import GRPOTrainer

    trainer = GRPOTrainer(*grpo_configs(args, output_dir))
    trainer.save_checkpoint = lambda: None  # trl runs with save_strategy="no"
    step_ends, samples = [], []

    clip_and_step = trainer._clip_and_step

    def timed_clip_and_step():
        out = clip_and_step()
        step_ends.append(time.perf_counter())
        return out

    trainer._clip_and_step = timed_clip_and_step
    sampler = trainer.sampler
    generate = sampler.generate

    def timed_generate(prompt_ids, num_generations):
        start = time.perf_counter()
        rollout = generate(prompt_ids, num_generations)
        samples.append(
            {
                "start": start,
                "end": time.perf_counter(),
                "completion_tokens": int(rollout.completion_mask.sum()),
                "prompt_tokens": sum(len(p) for p in prompt_ids) * num_generations,
            }
        )
        return rollout

    sampler.generate = timed_generate
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    trainer.train()
    phases = []
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            phases.append({k: v for k, v in record.items() if k.startswith("time/")})
    return {"start": start, "step_ends": step_ends, "samples": samples, "phases": phases}


def child_main(args) -> None:
    """One timed run in this process (``--child ours|trl``), written to ``--child_out`` as JSON."""
    import torch

    from benchmarks.trl_arm import run_trl

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.child}-") as tmp:
        result = (run_ours if args.child == "ours" else run_trl)(args, tmp)
    result.update({"impl": args.child, "peak_rss_mb": peak_rss_mb(), "torch_threads": torch.get_num_threads()})
    with open(args.child_out, "w") as f:
        json.dump(result, f)


# --- the parent: alternate runs, summarise ----------------------------------------------------


def summarise_run(run: dict, num_iterations: int) -> dict:
    """Per-run numbers with the first (warm-up) step left out."""
    ends = [run["start"], *run["step_ends"]]
    step_times = [b - a for a, b in zip(ends, ends[1:])]
    window_start, window_end = ends[1], ends[-1]
    measured = [s for s in run["samples"] if s["start"] >= window_start and s["end"] <= window_end]
    sample_s = sum(s["end"] - s["start"] for s in measured)
    completion_tokens = sum(s["completion_tokens"] for s in measured)
    trained_tokens = num_iterations * sum(s["completion_tokens"] + s["prompt_tokens"] for s in measured)
    wall = window_end - window_start
    out = {
        "step_times_s": step_times,
        "measured_s": wall,
        "sample_s": sample_s,
        "completion_tokens": completion_tokens,
        "sample_tokens_per_s": completion_tokens / sample_s if sample_s else None,
        "tokens_per_s": completion_tokens / wall if wall else None,
        "train_tokens_per_s": trained_tokens / (wall - sample_s) if wall > sample_s else None,
        "peak_rss_mb": run["peak_rss_mb"],
    }
    if "step_begins" in run:
        out["step_begin_end_s"] = [e - b for b, e in zip(run["step_begins"], run["step_ends"])]
    if "phases" in run:
        out["phases"] = run["phases"]
    return out


def aggregate(runs: list[dict]) -> dict:
    steps = [t for r in runs for t in r["step_times_s"][1:]]
    total = lambda key: sum(r[key] for r in runs)  # noqa: E731
    sample_s, wall, tokens = total("sample_s"), total("measured_s"), total("completion_tokens")
    trained = [r["train_tokens_per_s"] * (r["measured_s"] - r["sample_s"]) for r in runs if r["train_tokens_per_s"]]
    return {
        "median_step_s": statistics.median(steps),
        "mean_step_s": statistics.fmean(steps),
        "steps_measured": len(steps),
        "sample_tokens_per_s": tokens / sample_s if sample_s else None,
        "tokens_per_s": tokens / wall if wall else None,
        "train_tokens_per_s": sum(trained) / (wall - sample_s) if wall > sample_s else None,
        "sample_share": sample_s / wall if wall else None,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
    }


def ratio(a, b):
    return a / b if a is not None and b else None


SETTINGS = (
    "size", "model", "lora", "steps", "repeats", "threads", "num_generations", "per_device_train_batch_size",
    "gradient_accumulation_steps", "max_completion_length", "temperature", "top_p", "top_k", "beta",
    "num_iterations", "learning_rate", "seed",
)  # fmt: skip


def run_children(args, argv: list[str], which: list[str]) -> dict[str, list[dict]]:
    """Alternate fresh subprocess runs (``which`` in turn, ``args.repeats`` times); their summaries per trainer.
    Raises ``SystemExit`` when a run fails."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
        "PYTHONPATH": ROOT,
    }
    runs: dict[str, list[dict]] = {w: [] for w in which}
    with tempfile.TemporaryDirectory(prefix="bench-vs-trl-") as tmp:
        for repeat in range(args.repeats):
            for impl in which:
                out = os.path.join(tmp, f"{impl}-{repeat}.json")
                cmd = [sys.executable, os.path.abspath(__file__), *argv, "--child", impl, "--child_out", out]
                start = time.perf_counter()
                proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                    raise SystemExit(f"{impl} run {repeat} failed with exit code {proc.returncode}")
                with open(out) as f:
                    run = summarise_run(json.load(f), args.num_iterations)
                runs[impl].append(run)
                print(
                    f"[{impl} {repeat + 1}/{args.repeats}] {time.perf_counter() - start:.1f}s in all; "
                    f"steps {', '.join(f'{t:.2f}' for t in run['step_times_s'])} s; "
                    f"peak RSS {run['peak_rss_mb']:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def print_table(result: dict, summary: dict) -> None:
    """The side-by-side table on stderr."""
    print(
        f"{'':6} {'median s/step':>14} {'mean s/step':>12} {'sample tok/s':>13} {'train tok/s':>12} "
        f"{'peak RSS MB':>12}",
        file=sys.stderr,
    )
    for impl in ("ours", "trl"):
        s = summary[impl]
        print(
            f"{impl:6} {s['median_step_s']:14.3f} {s['mean_step_s']:12.3f} {s['sample_tokens_per_s'] or 0:13.1f} "
            f"{s['train_tokens_per_s'] or 0:12.1f} {s['peak_rss_mb']:12.0f}",
            file=sys.stderr,
        )
    print(
        f"ours/trl: step time {result['step_time_ratio']:.3f}, peak RSS {result['peak_rss_ratio']:.3f}",
        file=sys.stderr,
    )


def main(argv=None) -> dict:
    """Run the benchmark (or, with ``--child``, one of its runs); prints and returns the summary."""
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return {}
    which = [w.strip() for w in args.which.split(",") if w.strip()]
    runs = run_children(args, list(argv if argv is not None else sys.argv[1:]), which)
    summary = {impl: aggregate(r) for impl, r in runs.items()}
    result = {"settings": {k: getattr(args, k) for k in SETTINGS}, **summary, "runs": runs}
    if "ours" in summary and "trl" in summary:
        ours, trl = summary["ours"], summary["trl"]
        result.update(
            {
                "step_time_ratio": ratio(ours["median_step_s"], trl["median_step_s"]),
                "mean_step_time_ratio": ratio(ours["mean_step_s"], trl["mean_step_s"]),
                "peak_rss_ratio": ratio(ours["peak_rss_mb"], trl["peak_rss_mb"]),
                "sample_tokens_per_s_ratio": ratio(ours["sample_tokens_per_s"], trl["sample_tokens_per_s"]),
                "tokens_per_s_ratio": ratio(ours["tokens_per_s"], trl["tokens_per_s"]),
                "train_tokens_per_s_ratio": ratio(ours["train_tokens_per_s"], trl["train_tokens_per_s"]),
            }
        )
        print_table(result, summary)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
