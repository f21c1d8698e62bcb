"""grpo.samplers.server_sync and the weight_sync helpers it uses, without a server: the weight files hold exactly
what the colocated sync streams (tied names included), the adapter folder loads back into peft as the same
adapter, the metadata vLLM's NCCL engine checks agrees with the stream, and a bounded call gives up."""

import json
import os
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from grpo.config import ModelArguments
from grpo.model import TINY, load_policy
from grpo.samplers.server_client import ServerTimeout
from grpo.samplers.server_sync import run_bounded, write_adapter, write_weight_files
from grpo.samplers.weight_sync import lora_adapter_state, policy_weight_metadata, policy_weights


@pytest.fixture(scope="module")
def lora_policy():
    policy = load_policy(ModelArguments(model_name_or_path=TINY, use_peft=True, lora_r=4, lora_alpha=8))
    with torch.no_grad():  # a trained adapter: B != 0
        g = torch.Generator().manual_seed(0)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return policy


@pytest.mark.parametrize("merge_lora", [True, False], ids=["merged", "base-only"])
def test_weight_files_hold_the_stream_one_file_per_bucket(lora_policy, tmp_path, merge_lora):
    folder = str(tmp_path / "weights-v1")
    written = write_weight_files(lora_policy, folder, bucket_bytes=60_000, merge_lora=merge_lora)
    files = sorted(os.listdir(folder))
    assert len(files) > 2 and all(f.startswith("model-") and f.endswith(".safetensors") for f in files)
    assert not os.path.exists(folder + ".tmp")  # renamed into place when complete
    loaded = {k: v for f in files for k, v in load_file(os.path.join(folder, f)).items()}
    expected = dict(policy_weights(lora_policy, 60_000, merge_lora))
    assert loaded.keys() == expected.keys() and "lm_head.weight" in loaded  # tied: under both names
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
    assert written == sum(t.numel() * t.element_size() for t in expected.values())
    q = "model.layers.0.self_attn.q_proj.weight"
    base = dict(lora_policy.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
    assert torch.equal(loaded[q], base) != merge_lora  # base-only leaves the adapter out; merged adds it


def test_weight_files_in_the_servers_dtype(tiny_model, tmp_path):
    write_weight_files(tiny_model, str(tmp_path / "w"), bucket_bytes=1 << 30, dtype=torch.bfloat16)
    loaded = load_file(str(tmp_path / "w" / "model-00001.safetensors"))
    assert {t.dtype for t in loaded.values()} == {torch.bfloat16}


def test_adapter_folder_loads_back_as_the_same_adapter(lora_policy, tmp_path):
    from peft import PeftModel

    folder = str(tmp_path / "grpo-run-v1")
    written = write_adapter(lora_policy, folder)
    config = json.load(open(os.path.join(folder, "adapter_config.json")))
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["peft_type"] == "LORA"
    state = lora_adapter_state(lora_policy)
    assert written == sum(t.numel() * t.element_size() for t in state.values())
    assert written < sum(p.numel() * 4 for p in lora_policy.parameters()) / 10
    fresh = PeftModel.from_pretrained(load_policy(ModelArguments(model_name_or_path=TINY)), folder)
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, lora_policy(ids).logits, rtol=0, atol=1e-6)
        with lora_policy.disable_adapter():  # negative control: the adapter matters
            assert (lora_policy(ids).logits - fresh(ids).logits).abs().max() > 1e-3


@pytest.mark.parametrize("merge_lora", [True, False])
def test_metadata_agrees_with_the_stream(lora_policy, tiny_model, merge_lora):
    """vLLM's NCCL engine sizes its receive buffers from the metadata and refuses a stream that differs."""
    for model in (lora_policy, tiny_model):
        stream = [(n, t.dtype, tuple(t.shape)) for n, t in policy_weights(model, 1 << 16, merge_lora)]
        assert policy_weight_metadata(model, merge_lora) == stream


def test_run_bounded_returns_raises_and_gives_up():
    assert run_bounded(lambda: 7, 5, "adding", "h:1") == 7
    with pytest.raises(ZeroDivisionError):
        run_bounded(lambda: 1 / 0, 5, "dividing", "h:1")
    never = threading.Event()
    start = time.monotonic()
    with pytest.raises(ServerTimeout, match=r"vLLM server at h:1: NCCL weight broadcast did not finish within 0\.5 s"):
        run_bounded(never.wait, 0.5, "NCCL weight broadcast", "h:1")
    assert time.monotonic() - start < 30
    never.set()
