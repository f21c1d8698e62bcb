"""scripts/gpu_check.sh needs only torch, transformers, peft and accelerate: checked in an environment built here
that holds just those four packages and what they depend on (symbolic links into a folder, Python run with -S),
the way a bare GPU image would. Fast: grpo's trainer modules import there, and vllm, trl, deepspeed, math-verify,
datasets, gguf and reasoning-gym cannot. Slow: the whole check runs there on CPU (tiny model, fp32)."""

import importlib.metadata as metadata
import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from grpo.model import TINY, resolve_model_path
from tests.conftest import ROOT

IMAGE = ("torch", "transformers", "peft", "accelerate")  # what the GPU machine has (and their dependencies)
ABSENT = ("vllm", "trl", "deepspeed", "math_verify", "datasets", "gguf", "reasoning_gym")


def _closure(names) -> set[str]:
    """The distributions ``names`` need, recursively (requirements without extras whose markers hold)."""
    todo, seen = list(names), set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """A folder holding links to the closure's installed files (top-level packages, modules and dist-info)."""
    site = tmp_path_factory.mktemp("image")
    for name in _closure(IMAGE):
        dist = metadata.distribution(name)
        base = dist.locate_file("")
        for entry in {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}:
            target = site / entry
            if entry != "__pycache__" and not target.exists():
                os.symlink(os.path.join(base, entry), target)
    return str(site)


def _python(site: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{site}", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-S", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_the_image_has_only_its_packages_and_grpo_imports_there(image):
    code = (
        "import importlib.util, sys\n"
        "import grpo.trainer, grpo.samplers.hf, grpo.algo.loss, rewards.registry, scripts.gpu_check\n"
        f"absent = {ABSENT!r}\n"
        "print([m for m in absent if importlib.util.find_spec(m) is not None or m in sys.modules])\n"
    )
    result = _python(image, "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    found = _python(image, "-c", "import importlib.util; print(importlib.util.find_spec('trl'))")
    assert found.stdout.strip() == "None"  # negative control: the shared environment does have trl
    assert _python("/nonexistent", "-c", "import transformers").returncode != 0  # and -S really drops site-packages


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu_in_the_bare_image(image, tmp_path):
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PYTHON": str(wrapper), "PYTHONPATH": image, "OMP_NUM_THREADS": "1"}
    flags = ["--steps", "2", "--batch", "8", "--num_generations", "4", "--max_completion_length", "16"]
    cmd = [os.path.join(ROOT, "scripts", "gpu_check.sh"), resolve_model_path(TINY), *flags]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for line in ("sampled tokens/s:", "training tokens/s:", "FLOPs/token", "MFU (update):", "token NLL: fp32"):
        assert line in out, out
    nll = next(line for line in out.splitlines() if line.startswith("token NLL"))
    assert float(nll.split("|diff| ")[1]) < 1e-2  # bf16 autocast vs fp32 on the same weights: close, not equal
