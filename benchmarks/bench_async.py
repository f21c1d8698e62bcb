"""Synchronous colocated vs server-mode synchronous vs asynchronous rollouts, side by side (issue 16).

Modes, each a fresh child process on the same recipe and machine:

- ``sync``: ``sampler: hf``, the synchronous loop; sampling and training share the trainer's core.
- ``server``: ``sampler: vllm_server``, synchronous; ``grpo serve`` runs on the sampler's core.
- ``async``: ``sampler: hf`` with ``async_rollouts: true, max_staleness: 1``; the producer thread is pinned to
  the sampler's core, the trainer's main thread to the trainer's core.

Per mode, medians over the steps after the first (warm-up): step time; the sampler's phase (generation + rewards,
``time/sample_s + time/rewards_s``) and the trainer's (``time/logprobs_s + time/update_s + time/sync_s``); idle
shares ``1 - phase / step``; completion tokens per second of wall time; sync seconds and bytes; for ``async``
also the measured ``async/trainer_wait_s`` and ``async/sampler_wait_s``. The last line is one JSON object with
``ratio_async_step_to_sum`` = async step / (sample + train of the ``sync`` run): about
``max(sample, train) / (sample + train)`` when the two phases have their own cores, about 1 when they share one.

``--sample_delay_s D`` adds D seconds of sleep to every generation call (``sync`` and ``async``): a stand-in for a
sampler on another device, which costs the trainer's core nothing while it waits.

    taskset -c 1 .venv/bin/python benchmarks/bench_async.py --sampler_core 1 --trainer_core 1 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("sync", "server", "async")
MODEL = "tiny-random-llama-hd32"  # vLLM's CPU attention needs head_dim 32; the same model in every mode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of sync,server,async")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per mode (the first is warm-up)")
    p.add_argument("--sampler_core", type=int, default=1, help="CPU core of the sampler (server, async producer)")
    p.add_argument("--trainer_core", type=int, default=1, help="CPU core of the trainer")
    p.add_argument("--model", default=MODEL)
    p.add_argument("--max_completion_length", type=int, default=64)
    p.add_argument("--num_generations", type=int, default=8)
    p.add_argument("--batch", type=int, default=16, help="completions per rollout (per_device_train_batch_size)")
    p.add_argument("--sample_delay_s", type=float, default=0.0, help="sleep added to each generation call")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is warm-up)")
    return args


def train_flags(args: argparse.Namespace, mode: str, out: str) -> list[str]:
    """The recipe's flags for ``mode`` (the tiny recipe, bigger batches and completions, no checkpoints)."""
    flags = [
        os.path.join(ROOT, "recipes", "tiny", "smoke.yaml"),
        *("--output_dir", out, "--max_steps", str(args.steps), "--model_name_or_path", args.model),
        *("--num_generations", str(args.num_generations), "--per_device_train_batch_size", str(args.batch)),
        *("--gradient_accumulation_steps", "1", "--max_completion_length", str(args.max_completion_length)),
        *("--save_steps", "0", "--beta", "0", "--learning_rate", "1e-3"),
    ]
    if mode == "server":
        flags += ["--sampler", "vllm_server", "--vllm_server_port", str(args.port)]
    if mode == "async":
        flags += ["--async_rollouts", "true", "--max_staleness", "1"]
    return flags


def child(args: argparse.Namespace) -> None:
    """One mode's run in this process: the main thread on the trainer's core, the producer on the sampler's."""
    import torch

    torch.set_num_threads(1)
    from grpo.async_rollouts import AsyncRollouts
    from grpo.config import parse_config
    from grpo.trainer import GRPOTrainer

    os.sched_setaffinity(0, {args.trainer_core})  # this (main) thread
    run = AsyncRollouts._run

    def pinned_run(self):
        os.sched_setaffinity(0, {args.sampler_core})  # Linux: pid 0 = the calling thread
        return run(self)

    AsyncRollouts._run = pinned_run
    trainer = GRPOTrainer(*parse_config(train_flags(args, args.child, args.out)))
    if args.sample_delay_s > 0:
        from grpo.samplers.hf import HFSampler

        generate = HFSampler.generate

        def slow(self, *a, **kw):
            time.sleep(args.sample_delay_s)
            return generate(self, *a, **kw)

        HFSampler.generate = slow
    trainer.train()


def summarise(records: list[dict]) -> dict:
    """Medians over the measured steps (all but the first) of one mode's metrics.jsonl records."""
    rows = records[1:]

    def med(f) -> float:
        return statistics.median(f(r) for r in rows)

    step = med(lambda r: r["step_time_s"])
    sample = med(lambda r: r.get("time/sample_s", 0.0) + r.get("time/rewards_s", 0.0))
    train = med(lambda r: sum(r.get(f"time/{k}_s", 0.0) for k in ("logprobs", "update", "sync")))
    out = {
        "step_s": step,
        "sample_s": sample,
        "train_s": train,
        "trainer_idle_share": max(0.0, 1 - train / step),
        "sampler_idle_share": max(0.0, 1 - sample / step),
        "tokens_per_s": med(lambda r: r["completion_length/mean"] * r["_n"] / r["step_time_s"]),
        "sync_s": med(lambda r: r["sync_time_s"]),
        "sync_bytes": med(lambda r: r["sync_bytes"]),
        "steps_measured": len(rows),
    }
    if "async/trainer_wait_s" in rows[0]:
        out["trainer_wait_s"] = med(lambda r: r["async/trainer_wait_s"])
        out["sampler_wait_s"] = med(lambda r: r["async/sampler_wait_s"])
        out["staleness_max"] = max(r["async/staleness_max"] for r in rows)
    return out


def run_mode(args: argparse.Namespace, mode: str, workdir: str, port: int = 0) -> dict:
    out = os.path.join(workdir, mode)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--out", out, "--port", str(port)]
    for name in ("steps", "sampler_core", "trainer_core", "model", "max_completion_length", "num_generations"):
        cmd += [f"--{name}", str(getattr(args, name))]
    cmd += ["--batch", str(args.batch), "--sample_delay_s", str(args.sample_delay_s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    for r in records:
        r["_n"] = args.batch
    return {**summarise(records), "wall_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(args)
        return {}
    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for mode in modes:
            if mode == "server":
                results[mode] = run_server_mode(args, workdir)
            else:
                results[mode] = run_mode(args, mode, workdir)
            print(mode, json.dumps(results[mode]), flush=True)
    summary = {"modes": results, "settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")}}
    summary["cores_shared"] = args.sampler_core == args.trainer_core
    if "sync" in results and "async" in results:
        s = results["sync"]
        summary["ratio_async_step_to_sum"] = results["async"]["step_s"] / (s["sample_s"] + s["train_s"])
        summary["ideal_ratio_own_cores"] = max(s["sample_s"], s["train_s"]) / (s["sample_s"] + s["train_s"])
    print(json.dumps(summary))
    return summary


def run_server_mode(args: argparse.Namespace, workdir: str) -> dict:
    """``grpo serve`` pinned to the sampler's core (children inherit the affinity at start), then the run."""
    from grpo.serve import served

    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {args.sampler_core})
    try:
        log = os.path.join(workdir, "server.log")
        with served(args.model, "--enforce_eager", "--kv_cache_gb", "0.25", log_path=log) as (port, _):
            os.sched_setaffinity(0, own)
            return run_mode(args, "server", workdir, port)
    finally:
        os.sched_setaffinity(0, own)


if __name__ == "__main__":
    main()
