"""``grpo plot`` (grpo/plot.py): readable PNG files from a real metrics.jsonl of the tiny recipe and from real
``grpo eval`` output, hand-computed smoothing, error bars and paired bootstrap, rollback-aware curves, and a
clear error for a folder without metrics.jsonl."""

import json
import os
import struct

import pytest

from grpo.cli import main
from grpo.plot import load_eval, load_metrics, smooth
from tests.conftest import SMOKE_RECIPE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG header; fails unless the file starts like a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def assert_readable_image(path, min_width=500, min_height=350):
    import matplotlib.image

    width, height = png_size(path)
    assert width >= min_width and height >= min_height, (path, width, height)
    pixels = matplotlib.image.imread(path)  # decodes the whole file
    assert pixels.shape[:2] == (height, width)
    ink = (pixels[..., :3].mean(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    assert 0.01 < ink < 0.6, (path, ink)  # lines, labels and text, on a mostly white page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real output folder: 3 steps of the tiny recipe."""
    from tests.test_trainer import make_trainer

    folder = tmp_path_factory.mktemp("run")
    make_trainer(folder, "--max_steps", "3").train()
    return folder


def test_plot_writes_readable_curves_of_the_logged_keys(run_dir, capsys):
    assert main(["plot", str(run_dir)]) == 0
    out = run_dir / "plots"
    written = capsys.readouterr().out.split()
    assert written[0] == str(out / "curves.png") and all(os.path.isfile(p) for p in written)
    panels = {os.path.basename(p)[: -len(".png")] for p in written[1:]}
    assert panels == {"reward", "accuracy", "completion_length", "truncated", "kl", "entropy", "zero_std"}
    width, height = png_size(out / "curves.png")
    assert (width, height) == (1800, 3 * 432)  # 7 panels: 3 rows of 3 at 120 dpi
    assert_readable_image(out / "curves.png")
    for panel in panels:
        assert_readable_image(out / f"{panel}.png")


def test_heldout_accuracy_from_real_eval_output_and_a_summary(run_dir, tmp_path, capsys):
    base = tmp_path / "base.jsonl"
    assert main(["eval", SMOKE_RECIPE, "--model", "tiny-random-llama", "--out", str(base), "--limit", "4"]) == 0
    rows = [json.loads(line) for line in base.read_text().splitlines()]
    trained = tmp_path / "trained.jsonl"  # the same problems, 3 of 4 now correct
    trained.write_text("".join(json.dumps({**r, "accuracy": float(i != 1)}) + "\n" for i, r in enumerate(rows)))
    folder = tmp_path / "bench"
    folder.mkdir()
    summary = {"settings": {}, "results": [{"benchmark": "gsm8k", "budget": None, "num_problems": 9, "pass@1": 0.2}]}
    (folder / "summary.json").write_text(json.dumps(summary))  # the shape grpo eval --out_dir writes
    capsys.readouterr()
    evals = ["--eval", f"base={base}", "--eval", f"trained={trained}", "--eval", f"gsm8k={folder}"]
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "plots"), *evals]) == 0
    assert capsys.readouterr().out.split()[-1] == str(tmp_path / "plots" / "heldout_accuracy.png")
    assert_readable_image(tmp_path / "plots" / "heldout_accuracy.png")
    (result,) = load_eval(str(trained))
    # 3 of 4 correct: mean 0.75, sample std sqrt(0.75 / 3) = 0.5, standard error 0.5 / sqrt(4) = 0.25
    assert (result["accuracy"], result["stderr"], result["num_problems"]) == (0.75, 0.25, 4)
    assert load_eval(str(folder))[0] == {
        "benchmark": "gsm8k",
        "accuracy": 0.2,
        "stderr": None,
        "num_problems": 9,
        "per_problem": None,
    }


def test_missing_or_unreadable_inputs_give_clear_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert f"{tmp_path}/metrics.jsonl not found" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="metrics.jsonl not found"):
        load_metrics(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n{"reward": 0.2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2: no integer 'step'"):
        load_metrics(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
    (tmp_path / "e.jsonl").write_text('{"problem": "p", "format": 1.0}\n')
    assert main(["plot", str(tmp_path), "--eval", f"x={tmp_path / 'e.jsonl'}"]) == 2
    assert "e.jsonl: no correctness column (accuracy, reasoning_gym)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plot", str(tmp_path), "--eval", "no-label"])


def test_steps_logged_again_replace_the_abandoned_ones(tmp_path):
    records = [{"step": s, "reward": r} for s, r in [(1, 0.1), (2, 0.2), (3, 0.3), (2, 0.5), (3, 0.6), (4, 0.7)]]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    kept, restarts = load_metrics(str(tmp_path))
    assert [(r["step"], r["reward"]) for r in kept] == [(1, 0.1), (2, 0.5), (3, 0.6), (4, 0.7)] and restarts == [2]
    assert main(["plot", str(tmp_path)]) == 0
    assert_readable_image(tmp_path / "plots" / "reward.png")


def test_reward_panel_draws_rewards_not_their_timings():
    from grpo.plot import PANELS

    keys = ["reward", "rewards/accuracy", "rewards/accuracy/time_s", "rewards/format", "rewards/format/timeouts"]
    series = dict(PANELS[0][3](keys))
    assert list(series) == ["reward", "rewards/accuracy", "rewards/format"]


def test_smoothing_by_hand():
    # weight 0.5: avg 0.5 * 2 = 1, debiased 1 / 0.5 = 2; then avg 0.5 * 1 + 0.5 * 4 = 2.5, debiased 2.5 / 0.75
    assert smooth([2.0, None, 4.0], 0.5) == [2.0, None, pytest.approx(10 / 3)]
    assert smooth([1.0, 3.0], 0.0) == [1.0, 3.0]


def test_paired_title_gives_the_bootstrap_interval_of_the_difference():
    from grpo.plot import _paired_title

    before = {"per_problem": {p: 0.0 for p in "abcd"}}
    after = {"per_problem": {p: 1.0 for p in "abcd"}}  # every problem gains exactly 1
    title = _paired_title([("base", [before]), ("trained", [after])])
    assert "trained - base: +100.0 points, 95% CI +100.0 to +100.0 (paired bootstrap over 4 problems)" in title
    assert "\n" not in _paired_title([("base", [before])])  # one evaluation: no difference to give
