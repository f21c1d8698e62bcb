#!/usr/bin/env bash
# Cold start against none (docs/r1_pipeline.md, "Cold start against none, measured on CPU"): the base model and the
# pipeline's cold-start SFT model, each sampled once at the RL temperature on the first 32 GSM8K test problems
# with the RL recipe's template and rewards (seeded), then re-scored with the lenient format rewards.
# Needs outputs/r1-smollm2/sft_cold_start/model (grpo pipeline recipes/smollm2/r1.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p outputs/r1-measure
for pair in "sft outputs/r1-smollm2/sft_cold_start/model" "base smollm2-135m-instruct"; do
  set -- $pair
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" -c "
import sys; from accelerate.utils import set_seed; set_seed(0)
from grpo.eval.heldout import eval_main; sys.exit(eval_main(sys.argv[1:]))" recipes/smollm2/r1_grpo.yaml --model "$2" \
    --dataset_name ../shared/data/gsm8k/test.jsonl --limit 32 --eval_temperature 0.9 --max_completion_length 160 \
    --batch_size 32 --out "outputs/r1-measure/$1-seeded.jsonl"
  "$PY" -m grpo.cli score "outputs/r1-measure/$1-seeded.jsonl" --rewards accuracy,format,tag_count,language_consistency \
    --reward_kwargs '{"format": {"strict": false, "think_prefilled": true}, "tag_count": {"strict": false, "think_prefilled": true}}'
done
# the tag columns: share of completions that close </think>, open <answer>, close </answer>
"$PY" - <<'PY'
import json
for name in ("base", "sft"):
    rows = [json.loads(line) for line in open(f"outputs/r1-measure/{name}-seeded.jsonl")]
    print(name, {tag: sum(tag in r["completion"] for r in rows) / len(rows) for tag in ("</think>", "<answer>", "</answer>")})
PY
