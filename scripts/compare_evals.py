"""Print one Markdown table comparing ``grpo eval`` output folders (e.g. a model before and after training).

python scripts/compare_evals.py outputs/eval/base outputs/eval/trained --labels "base,after GRPO"
python scripts/compare_evals.py outputs/eval/base outputs/eval/trained --paired   # after minus before, 95% CI
"""

import argparse

from grpo.eval.paired import paired_table
from grpo.eval.report import compare_table

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dirs", nargs="+", help="grpo eval --out_dir folders (each with summary.json)")
    parser.add_argument("--labels", default=None, help="comma-separated row labels (default: the folder names)")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="compare every folder after the first with the first, problem by problem: accuracy difference with "
        "a 95%% bootstrap interval over problems (labels name the folders after the first)",
    )
    ns = parser.parse_args()
    labels = ns.labels.split(",") if ns.labels else None
    if ns.paired:
        print(paired_table(ns.out_dirs[0], ns.out_dirs[1:], labels), end="")
    else:
        print(compare_table(ns.out_dirs, labels), end="")
