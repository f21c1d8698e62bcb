#!/usr/bin/env bash
# GPU check (issue 16, item 5): a few GRPO steps of SmolLM2-135M-Instruct in bf16 with the transformers sampler;
# prints sampled and training tokens/s, MFU, peak memory and the bf16-vs-fp32 loss difference (scripts/gpu_check.py
# says how each is computed). Needs only torch, transformers, peft and accelerate; no network.
#
#   scripts/gpu_check.sh MODEL_DIR [--steps 4] [--batch 64] [--max_completion_length 256] [--peak_tflops 989]
#   GRPO_GPU_CHECK_MODEL=MODEL_DIR scripts/gpu_check.sh [options]
#
# MODEL_DIR: a local SmolLM2-135M-Instruct folder (config.json, tokenizer files, safetensors weights, whole or
# sharded). `python scripts/gpu_check.py MODEL_DIR --pack_to OUT` writes a bf16 copy in shards of <= 60 MiB to
# carry file by file (docs/gpu_check.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -gt 0 && "$1" != --* ]]; then MODEL="$1"; shift; else MODEL="${GRPO_GPU_CHECK_MODEL:-}"; fi
if [[ -z "$MODEL" || ! -f "$MODEL/config.json" ]]; then
  echo "usage: scripts/gpu_check.sh MODEL_DIR [options]  (or GRPO_GPU_CHECK_MODEL=MODEL_DIR); no config.json in '$MODEL'" >&2
  exit 2
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
exec "${PYTHON:-python3}" "$ROOT/scripts/gpu_check.py" "$MODEL" "$@"
