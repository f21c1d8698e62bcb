"""Stream a policy's weights, by plain transformers name, in size-bounded buckets (for a vLLM sampler).

``policy_weights(model, bucket_bytes)`` yields ``(name, tensor)`` pairs in the names of the model's own
checkpoint (``model.layers.0.self_attn.q_proj.weight``), which is what vLLM's ``load_weights`` expects
(``policy_weight_buckets`` yields the same pairs a bucket at a time, ``policy_weight_metadata`` their names,
dtypes and shapes without gathering anything, ``lora_adapter_state`` a LoRA policy's adapter alone):

- **LoRA (peft)**: each LoRA layer's weight is sent merged, ``W + get_delta_weight(adapter)`` (peft's
  ``B A * alpha / r``, fan-in/fan-out aware), computed out of place: the policy is never modified, so there is
  no merge/unmerge round trip whose rounding would drift the frozen base weights a little at every sync.
  Names lose peft's ``base_model.model.`` prefix and ``.base_layer.``; ``modules_to_save`` copies are sent
  under the plain name and the frozen ``original_module`` is left out; adapter matrices are never sent.
- **ZeRO-3** (parameters carrying a ``ds_id``): the parameters of one bucket are gathered together with
  ``deepspeed.zero.GatheredParameters`` (read-only), copied out and released before the next bucket, so at
  most one bucket is ever gathered; ``deepspeed`` is imported only then.
- Tied parameters are sent under every name (``lm_head.weight`` as well as ``model.embed_tokens.weight``): vLLM's
  CPU backend repacks the output head into its own GEMM copy, which is rebuilt only when ``lm_head.weight``
  itself is loaded. Both names come from the same bucket (one gather).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class _Unit:
    """One tensor to send: its names for vLLM (several when tied), the parameters it is computed from, and how."""

    names: list[str]
    params: list[torch.nn.Parameter]
    compute: Callable[[], Tensor]


def vllm_name(name: str) -> str:
    """peft parameter name -> the plain transformers name.

    ``base_model.model.model.layers.0.mlp.up_proj.base_layer.weight`` -> ``model.layers.0.mlp.up_proj.weight``;
    ``...lm_head.modules_to_save.default.weight`` -> ``...lm_head.weight``. Plain names are returned unchanged.
    """
    name = name.removeprefix("base_model.model.")
    name = name.replace(".base_layer.", ".")
    if ".modules_to_save." in name:
        head, tail = name.split(".modules_to_save.", 1)
        name = f"{head}.{tail.split('.', 1)[1]}"
    return name


def _numel(p: torch.nn.Parameter) -> int:
    return int(getattr(p, "ds_numel", p.numel()))  # a ZeRO-3 partitioned parameter holds 0 elements locally


def _lora_delta(module) -> Tensor | None:
    """Sum of ``get_delta_weight`` over the module's active, unmerged adapters (None: no delta).

    Raises ``NotImplementedError`` for DoRA (its magnitude vector is not a plain additive delta)."""
    delta = None
    for adapter in module.active_adapters:
        if adapter not in module.lora_A or adapter in module.merged_adapters:
            continue
        if getattr(module, "use_dora", {}).get(adapter, False):
            raise NotImplementedError("weight sync of DoRA adapters is not supported; use plain LoRA")
        d = module.get_delta_weight(adapter)
        delta = d if delta is None else delta + d
    return delta


def _units(model: torch.nn.Module, merge_lora: bool = True) -> list[_Unit]:
    """The tensors to send, in parameter order (``merge_lora=False``: a LoRA layer's frozen base weight alone)."""
    modules = dict(model.named_modules())
    lora_layer = None
    if hasattr(model, "peft_config"):
        from peft.tuners.lora import LoraLayer as lora_layer
    units, seen = [], {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if ".lora_" in name or ".original_module." in name:
            continue  # adapter matrices go into their layer's merged weight; the frozen copy is not served
        if id(param) in seen:  # tied: the same tensor, sent under this name too, from the same bucket
            seen[id(param)].names.append(vllm_name(name))
            continue
        owner = modules.get(name.rsplit(".base_layer.", 1)[0]) if ".base_layer." in name else None
        if (
            merge_lora
            and lora_layer is not None
            and isinstance(owner, lora_layer)
            and name.endswith(".base_layer.weight")
        ):
            extra = [p for n, p in owner.named_parameters() if ".lora_" in n]

            def merged(owner=owner, base=param) -> Tensor:
                delta = _lora_delta(owner)
                return base.detach().clone() if delta is None else base.detach() + delta.to(base.dtype)

            units.append(_Unit([vllm_name(name)], [param, *extra], merged))
        else:
            units.append(_Unit([vllm_name(name)], [param], lambda p=param: p.detach()))
        seen[id(param)] = units[-1]
    return units


def _buckets(units: list[_Unit], bucket_bytes: int) -> Iterator[list[_Unit]]:
    """Consecutive units, at most ``bucket_bytes`` of parameters per bucket (a larger unit goes alone)."""
    bucket, size = [], 0
    for unit in units:
        unit_bytes = sum(_numel(p) * p.element_size() for p in unit.params)
        if bucket and size + unit_bytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append(unit)
        size += unit_bytes
    if bucket:
        yield bucket


def _gathered(params: list[torch.nn.Parameter]):
    """ZeRO-3: gather ``params`` for reading (``deepspeed.zero.GatheredParameters``); otherwise a no-op."""
    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


@torch.no_grad()
def policy_weight_buckets(
    model: torch.nn.Module, bucket_bytes: int = 256 << 20, merge_lora: bool = True
) -> Iterator[list[tuple[str, Tensor]]]:
    """Yield the ``(transformers name, tensor)`` pairs vLLM needs, one bucket (a list) at a time.

    Args:
        model: the unwrapped policy (a transformers model, or a peft model around one; ZeRO-3 parameters ok).
        bucket_bytes: most parameter bytes gathered or materialised at once.
        merge_lora: False sends a LoRA policy's frozen base weights (the adapter left out, for adapter-only sync).
    Yields:
        Lists of plain tensors. Without ZeRO-3 they may be views of the live parameters (read them before the
        next optimizer step; tied names share one tensor); gathered ones are copies. Under ZeRO-3 every process
        must iterate in step (each bucket's gather is a collective).
    Raises:
        NotImplementedError: a DoRA adapter.
    """
    for bucket in _buckets(_units(model, merge_lora), bucket_bytes):
        params = [p for unit in bucket for p in unit.params]
        zero3 = any(hasattr(p, "ds_id") for p in params)
        with _gathered(params):
            tensors = [(unit.names, unit.compute()) for unit in bucket]
            if zero3:  # the gathered storage is released when the context closes
                tensors = [(names, t.clone()) for names, t in tensors]
        yield [(name, tensor) for names, tensor in tensors for name in names]


def policy_weights(
    model: torch.nn.Module, bucket_bytes: int = 256 << 20, merge_lora: bool = True
) -> Iterator[tuple[str, Tensor]]:
    """``policy_weight_buckets`` flattened: one ``(transformers name, tensor)`` pair at a time (same arguments,
    same guarantees)."""
    for bucket in policy_weight_buckets(model, bucket_bytes, merge_lora):
        yield from bucket


def policy_weight_metadata(model: torch.nn.Module, merge_lora: bool = True) -> list[tuple[str, torch.dtype, tuple]]:
    """``(name, dtype, shape)`` of every pair ``policy_weights`` yields, in the same order, without gathering
    (ZeRO-3 partitioned parameters report their full ``ds_shape``)."""
    out = []
    for unit in _units(model, merge_lora):
        base = unit.params[0]
        shape = tuple(getattr(base, "ds_shape", base.shape))
        out += [(name, base.dtype, shape) for name in unit.names]
    return out


@torch.no_grad()
def lora_adapter_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """A peft policy's adapter weights as peft saves them (``get_peft_model_state_dict``: names like
    ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``), copied; under ZeRO-3 the adapter
    parameters are gathered together (every process must call this). Raises ``ValueError`` for a model without
    an adapter."""
    if not hasattr(model, "peft_config"):
        raise ValueError("lora_adapter_state needs a peft model (use_peft: true)")
    from peft import get_peft_model_state_dict

    params = [p for name, p in model.named_parameters() if ".lora_" in name]
    with _gathered(params):
        return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}
