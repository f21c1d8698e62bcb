"""benchmarks/bench_vs_trl.py: the summary arithmetic, and one short real run of both trainers (~20 s)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, ROOT)
from benchmarks.bench_vs_trl import aggregate, parse_args, summarise_run  # noqa: E402


def test_summary_leaves_out_the_warm_up_step_and_counts_tokens_in_the_window():
    run = {
        "start": 0.0,
        "step_ends": [10.0, 12.0, 15.0],
        "peak_rss_mb": 100.0,
        "samples": [
            {"start": 0.0, "end": 8.0, "completion_tokens": 999, "prompt_tokens": 1},  # warm-up step
            {"start": 10.0, "end": 11.0, "completion_tokens": 40, "prompt_tokens": 60},
            {"start": 12.0, "end": 13.0, "completion_tokens": 20, "prompt_tokens": 60},
        ],
    }
    s = summarise_run(run, num_iterations=2)
    assert s["step_times_s"] == [10.0, 2.0, 3.0] and s["measured_s"] == 5.0 and s["sample_s"] == 2.0
    assert s["completion_tokens"] == 60 and s["sample_tokens_per_s"] == 30.0 and s["tokens_per_s"] == 12.0
    assert s["train_tokens_per_s"] == pytest.approx(2 * 180 / 3.0)
    a = aggregate([s, s])
    assert a["median_step_s"] == 2.5 and a["steps_measured"] == 4 and a["peak_rss_mb"] == 100.0


def test_settings_follow_the_size_and_flags():
    args = parse_args(["--size", "smollm2", "--full", "--max_completion_length", "32"])
    assert args.model == "smollm2-135m-instruct" and not args.lora and args.max_completion_length == 32
    assert args.num_generations == 8 and parse_args([]).lora
    with pytest.raises(SystemExit):
        parse_args(["--steps", "1"])


def test_two_tiny_steps_of_ours_and_trl_give_the_ratios():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "bench_vs_trl.py"),
            "--size",
            "tiny",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--threads",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "step_time_ratio",
        "mean_step_time_ratio",
        "peak_rss_ratio",
        "sample_tokens_per_s_ratio",
        "train_tokens_per_s_ratio",
    ):
        assert result[key] > 0, key
    for impl in ("ours", "trl"):
        summary = result[impl]
        assert summary["steps_measured"] == 1 and summary["median_step_s"] > 0 and summary["peak_rss_mb"] > 100
        assert summary["sample_tokens_per_s"] > 0
        (run,) = result["runs"][impl]
        assert len(run["step_times_s"]) == 2 and 0 < run["completion_tokens"] <= 2 * 4 * 16  # one rollout of B*G rows
    assert result["settings"]["size"] == "tiny" and result["settings"]["threads"] == 1
