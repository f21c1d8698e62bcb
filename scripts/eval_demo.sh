#!/usr/bin/env bash
# Benchmark evaluation of SmolLM2-135M-Instruct before and after the CPU demo recipe (issue #6):
# GSM8K test and MATH-500 levels 1-2, K = 8 samples (R1 sampling: T 0.6, top-p 0.95), up to 384 tokens,
# the demo recipe's prompt template; best-of-N with the recipe's (lenient) format reward as verifier; ends with one table.
#   bash scripts/eval_demo.sh GSM8K_LIMIT MATH_LIMIT        # e.g. 200 133 (all of MATH-500 levels 1-2)
# Re-running resumes (only missing problems are sampled), so a larger limit extends an earlier run.
# Needs the trained model: grpo train recipes/smollm2/lora_arithmetic_format.yaml, then
#   grpo export outputs/smollm2-lora-arithmetic-format/checkpoint-60 outputs/smollm2-lora-arithmetic-format/model
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/eval-demo}"
RECIPE=recipes/smollm2/lora_arithmetic_format.yaml
COMMON=(--num_samples 8 --max_completion_length 384 --batch_size 64 --dtype float32 --verifiers reward:format)
declare -A MODELS=([base]=smollm2-135m-instruct [trained]=outputs/smollm2-lora-arithmetic-format/model)
for bench in gsm8k math500; do
  for name in base trained; do
    extra=(--limit "$1")
    [ "$bench" = math500 ] && extra=(--levels 1,2 --limit "$2")
    .venv/bin/grpo eval "$RECIPE" --model "${MODELS[$name]}" --benchmarks "$bench" "${extra[@]}" "${COMMON[@]}" \
      --out_dir "$OUT/$name-$bench"
  done
done
.venv/bin/python scripts/compare_evals.py "$OUT"/{base,trained}-gsm8k "$OUT"/{base,trained}-math500 \
  --labels "SmolLM2-135M-Instruct,+ demo GRPO,SmolLM2-135M-Instruct,+ demo GRPO"
