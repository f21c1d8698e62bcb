"""Print one Markdown table comparing ``grpo eval`` output folders (e.g. a model before and after training).

python scripts/compare_evals.py outputs/eval/base outputs/eval/trained --labels "base,after GRPO"
"""

import argparse

from grpo.eval.report import compare_table

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dirs", nargs="+", help="grpo eval --out_dir folders (each with summary.json)")
    parser.add_argument("--labels", default=None, help="comma-separated row labels (default: the folder names)")
    ns = parser.parse_args()
    print(compare_table(ns.out_dirs, ns.labels.split(",") if ns.labels else None), end="")
