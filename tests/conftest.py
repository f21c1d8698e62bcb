"""Shared test setup: one torch thread (the machine is shared), no tracker, small fixtures."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_RECIPE = os.path.join(ROOT, "recipes", "tiny", "smoke.yaml")
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


@pytest.fixture(scope="session")
def tokenizer():
    from grpo.config import ModelArguments
    from grpo.model import load_tokenizer

    return load_tokenizer(ModelArguments(model_name_or_path="tiny-random-llama"))


@pytest.fixture(scope="session")
def tiny_model():
    from grpo.config import ModelArguments
    from grpo.model import load_policy

    return load_policy(ModelArguments(model_name_or_path="tiny-random-llama"))
