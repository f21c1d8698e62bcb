"""scripts/compare_runs.py: the step window and the sums, hand-computed."""

import json
import subprocess
import sys

from tests.conftest import ROOT

sys.path.insert(0, ROOT)
from scripts.compare_runs import summary, window  # noqa: E402


def _write_run(path, rows):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_window_means_and_sampled_tokens_are_hand_computed(tmp_path):
    rows = [
        {"step": s, "zero_std_frac": z, "reward": r, "completion_length/mean": n}
        for s, z, r, n in [(1, 1.0, 0.0, 100.0), (2, 0.5, 0.25, 10.0), (3, 0.0, 0.75, 20.0)]
    ]
    _write_run(tmp_path / "a", rows)
    s = summary(window(str(tmp_path / "a"), 2, 3), completions_per_step=4)
    assert (s["steps"], s["first"], s["last"]) == (2, 2, 3)
    assert s["zero_std_frac"] == 0.25 and s["reward"] == 0.5
    assert s["sampled_tokens"] == (10.0 + 20.0) * 4
    assert s["entropy"] is None  # absent metric: no value, not zero


def test_table_has_one_row_per_run(tmp_path):
    _write_run(tmp_path / "a", [{"step": 1, "reward": 1.0, "completion_length/mean": 5.0}])
    _write_run(tmp_path / "b", [{"step": 1, "reward": 0.0, "completion_length/mean": 7.0}])
    out = subprocess.run(
        [sys.executable, "scripts/compare_runs.py", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "x,y"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 4 and lines[2].startswith("| x | 1-1 |") and lines[3].startswith("| y | 1-1 |")
    assert lines[2].endswith("| 320 |") and lines[3].endswith("| 448 |")
