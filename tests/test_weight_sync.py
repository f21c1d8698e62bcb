"""grpo.samplers.weight_sync: plain names, LoRA merged out of place (against peft's merge_and_unload), buckets."""

import copy

import pytest
import torch

from grpo.config import ModelArguments
from grpo.model import load_policy
from grpo.samplers.weight_sync import _buckets, _units, policy_weights, vllm_name


def test_vllm_name_maps_peft_names_to_plain_ones():
    assert (
        vllm_name("base_model.model.model.layers.0.mlp.up_proj.base_layer.weight")
        == "model.layers.0.mlp.up_proj.weight"
    )
    assert vllm_name("base_model.model.lm_head.modules_to_save.default.weight") == "lm_head.weight"
    assert vllm_name("base_model.model.model.norm.weight") == "model.norm.weight"
    assert vllm_name("model.layers.1.self_attn.o_proj.weight") == "model.layers.1.self_attn.o_proj.weight"


def test_full_weights_are_the_parameters_themselves(tiny_model):
    sent = dict(policy_weights(tiny_model, bucket_bytes=1 << 12))
    params = dict(tiny_model.named_parameters(remove_duplicate=False))
    assert sent.keys() == params.keys() and "lm_head.weight" in sent  # tied weights under both names
    for name, tensor in sent.items():
        assert tensor.data_ptr() == params[name].data_ptr()  # no copy without ZeRO-3


@pytest.fixture(scope="module")
def lora_policy():
    policy = load_policy(ModelArguments(model_name_or_path="tiny-random-llama", use_peft=True, lora_r=4, lora_alpha=8))
    with torch.no_grad():  # a trained adapter: B != 0, so the merge matters
        g = torch.Generator().manual_seed(0)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return policy


def test_lora_is_merged_like_peft_and_the_policy_is_untouched(lora_policy):
    before = {n: p.detach().clone() for n, p in lora_policy.named_parameters()}
    sent = dict(policy_weights(lora_policy, bucket_bytes=1 << 14))
    reference = copy.deepcopy(lora_policy).merge_and_unload()  # peft's own merge
    expected = dict(reference.named_parameters(remove_duplicate=False))
    assert sent.keys() == expected.keys()
    for name, tensor in sent.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6)
    moved = [n for n, p in lora_policy.named_parameters() if not torch.equal(p, before[n])]
    assert moved == []  # out-of-place merge: no merge/unmerge rounding left in the base weights
    frozen = dict(lora_policy.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
    assert (sent["model.layers.0.self_attn.q_proj.weight"] - frozen).abs().max() > 1e-3  # negative control: merged


def test_buckets_respect_the_byte_bound(lora_policy):
    units = _units(lora_policy)
    bound = 40_000
    seen = []
    for bucket in _buckets(units, bound):
        size = sum(p.numel() * p.element_size() for u in bucket for p in u.params)
        assert size <= bound or len(bucket) == 1
        seen += [u.names[0] for u in bucket]
    assert seen == [u.names[0] for u in units]  # every unit once, in order
    assert len(list(_buckets(units, 1 << 40))) == 1


def test_zero3_gathers_one_bucket_at_a_time_and_copies(tiny_model, monkeypatch):
    """Parameters with a ``ds_id`` are gathered bucket by bucket through deepspeed.zero.GatheredParameters (a
    recording stand-in here: deepspeed is not installed); the tensors are copied while gathered and handed out
    after the release, so at most one bucket is ever gathered."""
    import sys
    import types

    events = []

    class Gathered:
        def __init__(self, params, modifier_rank=None):
            self.params, self.modifier_rank = params, modifier_rank

        def __enter__(self):
            events.append(("gather", [id(p) for p in self.params], self.modifier_rank))

        def __exit__(self, *exc):
            events.append(("release",))

    fake = types.ModuleType("deepspeed")
    fake.zero = types.SimpleNamespace(GatheredParameters=Gathered)
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    params = dict(tiny_model.named_parameters())
    for i, p in enumerate(params.values()):
        monkeypatch.setattr(p, "ds_id", i, raising=False)
        monkeypatch.setattr(p, "ds_numel", p.numel(), raising=False)
    bound = 60_000  # bytes: several buckets for this model (the embedding, larger, goes alone)
    stream = policy_weights(tiny_model, bucket_bytes=bound)
    sent = []
    for name, tensor in stream:
        assert events[-1] == ("release",)  # copied while gathered, handed out after the release
        sent.append((name, tensor))
    gathers = [e for e in events if e[0] == "gather"]
    assert len(gathers) > 2 and all(e[2] is None for e in gathers)  # read-only gathers
    assert [e[0] for e in events] == ["gather", "release"] * len(gathers)  # never two buckets at once
    sizes = [sum(p.numel() * 4 for p in params.values() if id(p) in set(e[1])) for e in gathers]
    assert max(sizes) <= max(bound, max(p.numel() * 4 for p in params.values()))  # never the whole model
    by_id = {id(p): p for p in params.values()}
    assert sum(len(e[1]) for e in gathers) == len(by_id)  # each parameter gathered exactly once (tied: once)
    for name, tensor in sent:
        source = dict(tiny_model.named_parameters(remove_duplicate=False))[name]
        assert torch.equal(tensor, source) and tensor.data_ptr() != source.data_ptr()  # a copy
