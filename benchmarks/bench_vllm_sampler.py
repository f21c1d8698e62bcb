"""The vLLM sampler against the transformers sampler inside real training runs, side by side.

Each run is ``grpo train RECIPE --sampler hf|vllm`` in a fresh subprocess (same recipe, seed and flags;
``OMP_NUM_THREADS`` = ``--threads``); runs alternate (hf, vllm, hf, vllm, ...). From every run's
``metrics.jsonl`` it takes, leaving out the first ``--warmup`` steps, the per-step ``sample_tokens_per_s``
(completion tokens / seconds inside ``sampler.generate``), ``step_time_s`` and ``sync_time_s``, and reports
the medians over all measured steps of all runs of each sampler, plus vLLM's engine start-up (the wall time
of a run minus its steps). vLLM runs pass ``--vllm_flags`` (default: eager mode, 1 GiB KV cache).

    python benchmarks/bench_vllm_sampler.py --recipe recipes/tiny/smoke.yaml --model tiny-random-llama-hd32 \\
        --steps 8 --repeats 3
    python benchmarks/bench_vllm_sampler.py --recipe recipes/smollm2/lora_arithmetic.yaml --steps 4 --repeats 2

The last line printed is one JSON object: per sampler the medians, and ``tokens_per_s_ratio`` (vllm / hf).
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=os.path.join(ROOT, "recipes", "tiny", "smoke.yaml"))
    p.add_argument("--model", default=None, help="override model_name_or_path (vLLM on CPU needs head_dim 32, 64, ...)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=1, help="first steps of each run left out")
    p.add_argument("--repeats", type=int, default=3, help="runs per sampler (alternating)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--vllm_flags", default="--vllm_enforce_eager true --vllm_kv_cache_gb 1", help="extra flags of the vLLM runs"
    )
    p.add_argument("--extra", default="", help="extra flags of every run, e.g. '--max_completion_length 64'")
    return p.parse_args(argv)


def run_once(args, sampler: str, output_dir: str) -> dict:
    """One training run in a subprocess; its measured steps and wall time."""
    cmd = [
        sys.executable,
        "-m",
        "grpo.cli",
        "train",
        args.recipe,
        "--sampler",
        sampler,
        "--max_steps",
        str(args.steps),
        "--output_dir",
        output_dir,
        "--save_steps",
        "0",
        "--disable_tqdm",
        "true",
        *args.extra.split(),
    ]
    if args.model:
        cmd += ["--model_name_or_path", args.model]
    if sampler == "vllm":
        cmd += args.vllm_flags.split()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=ROOT, TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    records = [json.loads(line) for line in open(os.path.join(output_dir, "metrics.jsonl"))]
    steps = records[args.warmup :]
    return {
        "wall_s": wall,
        "steps_s": sum(r["step_time_s"] for r in records),
        "tokens_per_s": [r["sample_tokens_per_s"] for r in steps],
        "step_time_s": [r["step_time_s"] for r in steps],
        "sync_time_s": [r["sync_time_s"] for r in steps],
        "sample_s": [r["time/sample_s"] for r in steps],
        "mismatch_abs": [r.get("mismatch/logprob_abs_diff") for r in steps],
        "reward": [r["reward"] for r in records],
    }


def summarise(runs: list[dict]) -> dict:
    pool = lambda key: [v for r in runs for v in r[key] if v is not None]  # noqa: E731
    return {
        "tokens_per_s": statistics.median(pool("tokens_per_s")),
        "step_time_s": statistics.median(pool("step_time_s")),
        "sample_s": statistics.median(pool("sample_s")),
        "sync_time_s": statistics.median(pool("sync_time_s")),
        "mismatch_abs_max": max(pool("mismatch_abs") or [float("nan")]),
        "startup_s": statistics.median(r["wall_s"] - r["steps_s"] for r in runs),
        "runs": runs,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    runs = {"hf": [], "vllm": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for sampler in ("hf", "vllm"):
                result = run_once(args, sampler, os.path.join(tmp, f"{sampler}-{i}"))
                runs[sampler].append(result)
                print(
                    f"{sampler} run {i}: median {statistics.median(result['tokens_per_s']):.0f} sample tok/s, "
                    f"median step {statistics.median(result['step_time_s']):.2f} s, wall {result['wall_s']:.0f} s",
                    flush=True,
                )
    out = {name: summarise(r) for name, r in runs.items()}
    out["tokens_per_s_ratio"] = out["vllm"]["tokens_per_s"] / out["hf"]["tokens_per_s"]
    out["settings"] = vars(args)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
