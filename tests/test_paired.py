"""grpo.eval.paired: bootstrap intervals against the normal approximation and a naive loop, the paired difference
on hand-made records, and the held-out ``recipe`` benchmark of ``grpo eval`` end to end on the tiny model."""

import json
import math
import random
from dataclasses import replace

import numpy as np
import pytest

from grpo.eval.paired import bootstrap_interval, paired_comparison, paired_table, problem_accuracies


def record(index, verdicts, benchmark="b", budget=None):
    samples = [{"correct": float(v)} for v in verdicts]
    return {"benchmark": benchmark, "budget": budget, "index": index, "samples": samples, "metrics": {}}


def test_bootstrap_interval_of_a_constant_is_that_constant():
    assert bootstrap_interval([0.25] * 10) == pytest.approx((0.25, 0.25), abs=1e-15)


def test_bootstrap_interval_matches_the_normal_approximation_for_a_large_sample():
    values = [1.0] * 200 + [0.0] * 200  # mean 0.5, standard error 0.5 / sqrt(400) = 0.025
    low, high = bootstrap_interval(values, num_resamples=20_000)
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.004) and high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.004)


def test_bootstrap_interval_equals_a_naive_loop_with_the_same_draws():
    values = [0.1, 0.9, 0.4, 0.4, 0.0, 1.0, 0.7]
    rng = np.random.default_rng(3)
    draws = rng.integers(0, len(values), size=(500, len(values)))  # the first (only) chunk of 1000 rows
    naive = sorted(sum(values[i] for i in row) / len(values) for row in draws)
    low, high = bootstrap_interval(values, num_resamples=500, confidence=0.9, seed=3)
    assert low == pytest.approx(np.quantile(naive, 0.05), abs=1e-12)
    assert high == pytest.approx(np.quantile(naive, 0.95), abs=1e-12)


def test_bootstrap_interval_errors():
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_interval([1.0])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([1.0, 0.0], confidence=1.0)


def test_problem_accuracy_is_the_mean_over_samples_and_skips_unverifiable_problems():
    unverifiable = record(2, [1, 1]) | {"metrics": None}
    assert problem_accuracies([record(0, [1, 0, 0, 1]), record(1, [0]), unverifiable]) == {
        ("b", None, 0): 0.5,
        ("b", None, 1): 0.0,
    }


def test_paired_difference_on_hand_made_records():
    before = [record(i, [v]) for i, v in enumerate([0, 0, 1, 1, 0, 1])]
    after = [record(i, [v]) for i, v in enumerate([1, 0, 1, 1, 1, 1])] + [record(9, [1])]  # 9: not in before
    (r,) = paired_comparison(before, after, num_resamples=2000)
    assert r["num_problems"] == 6 and r["num_samples"] == 1
    assert r["before"] == pytest.approx(3 / 6) and r["after"] == pytest.approx(5 / 6)
    assert r["difference"] == pytest.approx(2 / 6)
    assert 0 <= r["ci_low"] <= r["difference"] <= r["ci_high"] <= 1  # the per-problem differences lie in {0, 1}


def test_pairing_narrows_the_interval_against_independent_runs():
    """Negative control: on correlated runs (hard problems stay hard) the paired interval is much narrower than the
    one a naive unpaired comparison (independent resamples) would give."""
    rnd = random.Random(0)
    x = np.array([float(rnd.random() < 0.3) for _ in range(300)])
    y = np.maximum(x, (np.arange(300) % 20 == 0).astype(float))  # the same results, plus every 20th problem solved
    before = [record(i, [v]) for i, v in enumerate(x)]
    after = [record(i, [v]) for i, v in enumerate(y)]
    (r,) = paired_comparison(before, after)
    unpaired_width = 2 * 1.96 * math.sqrt(x.var(ddof=1) / 300 + y.var(ddof=1) / 300)
    assert r["ci_low"] > 0 and r["ci_high"] - r["ci_low"] < 0.6 * unpaired_width
    assert unpaired_width / 2 > r["difference"]  # unpaired, the same gain would not be told from noise


def test_paired_comparison_groups_by_benchmark_and_refuses_disjoint_runs():
    before = [record(0, [0], "x"), record(1, [1], "x"), record(0, [0], "y"), record(1, [0], "y")]
    after = [record(0, [1], "x"), record(1, [1], "x"), record(0, [0], "y"), record(1, [0], "y")]
    results = paired_comparison(before, after, num_resamples=100)
    assert [(r["benchmark"], r["difference"]) for r in results] == [("x", 0.5), ("y", 0.0)]
    with pytest.raises(ValueError, match="share no verified problem"):
        paired_comparison([record(0, [1])], [record(1, [1])])


def test_paired_table_reads_eval_folders(tmp_path):
    for name, verdicts in (("base", [0, 1, 0, 0]), ("trained", [1, 1, 1, 0])):
        (tmp_path / name).mkdir()
        lines = [json.dumps(record(i, [v])) for i, v in enumerate(verdicts)]
        (tmp_path / name / "samples.jsonl").write_text("\n".join(lines) + "\n")
    table = paired_table(str(tmp_path / "base"), [str(tmp_path / "trained")], ["GRPO"])
    assert "| GRPO | b | 4 | 1 | 25.0 [" in table and "| +50.0 [" in table
    with pytest.raises(FileNotFoundError, match="missing"):
        paired_table(str(tmp_path / "missing"), [str(tmp_path / "trained")])


def test_recipe_benchmark_holds_out_what_training_drew(tmp_path):
    """``grpo eval RECIPE --benchmarks recipe --heldout_from RUN``: only problems the run never drew, no repeats,
    indices into the recipe's data set (so the same problem keeps its index)."""
    from grpo.cli import main
    from grpo.config import parse_config
    from grpo.data import build_prompt_dataset, trained_problems
    from grpo.model import load_tokenizer
    from tests.conftest import SMOKE_RECIPE

    run = tmp_path / "run"
    assert main(["train", SMOKE_RECIPE, "--output_dir", str(run), "--max_steps", "2"]) == 0
    drawn = trained_problems(str(run))
    out = tmp_path / "eval"
    argv = ["eval", SMOKE_RECIPE, "--benchmarks", "recipe", "--heldout_from", str(run), "--limit", "20"]
    assert main([*argv, "--num_samples", "1", "--temperature", "0", "--out_dir", str(out)]) == 0
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    model_args, data_args, _, _ = parse_config([SMOKE_RECIPE])
    rows = build_prompt_dataset(data_args, load_tokenizer(model_args)).rows
    problems = [rows[r["index"]]["problem"] for r in records]
    assert len(records) == 20 and all(r["benchmark"] == "recipe" for r in records)
    assert not set(problems) & drawn and len(set(problems)) == 20
    assert drawn and len(drawn) <= 2 * 2  # 2 steps x 2 prompts
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["recipe_data"]["dataset_size"] == 64 and run_json["heldout_from"] == str(run)

    # recipe fields as flags: a fresh draw of the generated task (another seed, more rows), still without the
    # problems the run drew
    fresh = tmp_path / "fresh"
    flags = ["--dataset_seed", "7", "--dataset_size", "200", "--num_samples", "1", "--out_dir", str(fresh)]
    assert main([*argv, *flags]) == 0
    records = [json.loads(line) for line in (fresh / "samples.jsonl").read_text().splitlines()]
    rows = build_prompt_dataset(replace(data_args, dataset_seed=7, dataset_size=200), load_tokenizer(model_args)).rows
    problems = [rows[r["index"]]["problem"] for r in records]
    assert len(records) == 20 and not set(problems) & drawn and len(set(problems)) == 20
    assert json.loads((fresh / "run.json").read_text())["recipe_data"]["dataset_seed"] == 7


def test_recipe_fields_as_eval_flags_need_a_recipe(capsys):
    from grpo.cli import main

    assert main(["eval", "--benchmarks", "recipe", "--dataset_seed", "7"]) == 2
    err = capsys.readouterr().err
    assert "unknown arguments --dataset_seed" in err and "(recipe fields need a recipe file)" in err
