#!/usr/bin/env bash
# Before/after evaluation of the CPU demo (recipes/smollm2/lora_arithmetic.yaml), the table in docs/results.md:
#   - greedy accuracy on 300 held-out problems of the training task (a fresh draw, dataset_seed 1234, without any
#     problem the run drew), with the paired difference and its 95% bootstrap interval;
#   - sampled pass@1 and pass@8 on the first 32 of them (K 8, T 0.7);
#   - the first 200 GSM8K test problems (K 2, T 0.6, 256 tokens): no loss elsewhere (K 2, not 4, for CPU time);
#   - the training curves and the held-out bars (grpo plot).
#   bash scripts/heldout_demo.sh [RUN_DIR]        # default outputs/smollm2-lora-arithmetic; OUT=... for the eval folder
# Each evaluation resumes where it stopped; re-running adds only what is missing. The transformers sampler
# (SAMPLER=hf) is the faster one on 2 CPU cores for this model; SAMPLER=vllm on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=recipes/smollm2/lora_arithmetic.yaml
RUN="${1:-outputs/smollm2-lora-arithmetic}"
OUT="${OUT:-$RUN/eval}"
GRPO=.venv/bin/grpo
SAMPLER="${SAMPLER:-hf}"
last=$(ls -d "$RUN"/checkpoint-* | sort -t- -k2 -n | tail -1)
[ -d "$RUN/model" ] || $GRPO export "$last" "$RUN/model"
HELDOUT=(--benchmarks recipe --heldout_from "$RUN" --dataset_seed 1234 --dataset_size 2000 --limit 300
  --max_completion_length 160 --sampler "$SAMPLER")
declare -A MODELS=([base]=smollm2-135m-instruct [trained]="$RUN/model")
for name in base trained; do
  model="${MODELS[$name]}"
  $GRPO eval "$RECIPE" --model "$model" "${HELDOUT[@]}" --temperature 0 --out_dir "$OUT/$name-greedy"
  $GRPO eval "$RECIPE" --model "$model" "${HELDOUT[@]}" --limit 32 --num_samples 8 --temperature 0.7 --top_p 1.0 \
    --out_dir "$OUT/$name-sampled"
  $GRPO eval "$RECIPE" --model "$model" --benchmarks gsm8k --limit 200 --num_samples 2 --temperature 0.6 \
    --max_completion_length 256 --sampler "$SAMPLER" --out_dir "$OUT/$name-gsm8k"
done
for kind in greedy sampled gsm8k; do
  .venv/bin/python scripts/compare_evals.py "$OUT/base-$kind" "$OUT/trained-$kind" --paired --labels "GRPO $kind"
done
.venv/bin/python scripts/compare_evals.py "$OUT"/{base,trained}-{greedy,sampled,gsm8k}
$GRPO plot "$RUN" --eval "base=$OUT/base-greedy" --eval "trained=$OUT/trained-greedy"
