"""The vLLM samplers' arguments (``sampler: vllm`` and ``sampler: vllm_server``)."""

from __future__ import annotations

from dataclasses import dataclass

from grpo.config.fields import check_choice
from grpo.config.fields import help_field as _help


@dataclass
class VLLMArguments:
    """The vLLM engine of ``sampler: vllm`` (one engine colocated in each training process, see
    grpo/samplers/vllm.py) and the server of ``sampler: vllm_server`` (``vllm_server_*``: a vLLM server in its own
    process, started with ``grpo serve``; see grpo/samplers/server.py and docs/vllm.md). Recipes set these keys
    beside the others; only the vLLM samplers read them."""

    vllm_gpu_memory_utilization: float = _help(
        "Share of the GPU's memory the colocated vLLM engine may take for weights and KV cache (GPU only).", default=0.3
    )
    vllm_kv_cache_gb: float = _help(
        "vLLM KV cache size in GiB; 0 = from vllm_gpu_memory_utilization on a GPU, 1 GiB on CPU.", default=0.0
    )
    vllm_enable_sleep_mode: bool = _help(
        "Offload vLLM's weights and free its KV cache while training, wake it for generation (GPU only).", default=False
    )
    vllm_tensor_parallel_size: int = _help(
        "Tensor-parallel size of each vLLM engine; > 1 shards it over that many training processes "
        "(vLLM's external_launcher backend; the process count must be a multiple).",
        default=1,
    )
    vllm_sync_bucket_mb: int = _help(
        "Weight sync streams the policy to vLLM in buckets of at most this many MiB (under ZeRO-3 each bucket "
        "is gathered on its own, never the whole model).",
        default=256,
    )
    vllm_dtype: str = _help(
        "vLLM weight dtype: `auto` (fp32 on CPU, bf16 on GPUs that support it), or a torch "
        "dtype name such as `float32`.",
        default="auto",
    )
    vllm_max_model_len: int = _help("Longest prompt + completion vLLM serves (0 = the model's own limit).", default=0)
    vllm_enforce_eager: bool = _help(
        "Run vLLM without torch.compile and CUDA graphs: starts in seconds instead of about half a minute; "
        "slower per token on a GPU.",
        default=False,
    )
    vllm_server_host: str = _help("Host of the vLLM server (`grpo serve`; sampler: vllm_server).", default="127.0.0.1")
    vllm_server_port: int = _help("Port of the vLLM server.", default=8000)
    vllm_server_startup_timeout: float = _help(
        "Seconds the trainer waits at start for the server to answer /health (it may still be loading the model).",
        default=600.0,
    )
    vllm_server_connect_timeout: float = _help(
        "Seconds one TCP connection attempt to the server may take.", default=10.0
    )
    vllm_server_request_timeout: float = _help(
        "Seconds a generation or scoring request may wait for its answer before the run stops with an error.",
        default=600.0,
    )
    vllm_server_sync_timeout: float = _help(
        "Seconds each step of a weight sync (an HTTP call, the NCCL broadcast) may take before the run stops "
        "with an error.",
        default=600.0,
    )
    vllm_server_retries: int = _help(
        "Times a request is sent again after a connection failure (refused, reset), 2 s apart; timeouts are "
        "not retried.",
        default=2,
    )
    vllm_server_weight_transfer: str = _help(
        "`files`: weights written as safetensors into vllm_server_sync_dir, reloaded by the server (CPU or GPU, "
        "same machine or shared filesystem); `nccl`: broadcast from the trainer's rank 0 to the server's GPU "
        "workers (vLLM's NCCL weight-transfer engine); `auto`: nccl when the trainer has CUDA and the server "
        "runs a weight-transfer engine, else files.",
        default="auto",
    )
    vllm_server_sync_dir: str = _help(
        "Folder the trainer writes weights and LoRA adapters into for the server to read (at the same path); "
        "empty = a new temporary folder (in /dev/shm when present).",
        default="",
    )
    vllm_server_lora_adapter: bool = _help(
        "With use_peft: each sync sends only the LoRA adapter, which the server loads under a new name (the "
        "frozen base weights are sent once, at start); false sends merged full weights.",
        default=True,
    )

    def __post_init__(self) -> None:
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        for name in ("vllm_tensor_parallel_size", "vllm_sync_bucket_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("vllm_kv_cache_gb", "vllm_max_model_len"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = automatic), got {getattr(self, name)}")
        check_choice("vllm_server_weight_transfer", self.vllm_server_weight_transfer, ("auto", "files", "nccl"))
        if not 0 < self.vllm_server_port < 65536:
            raise ValueError(f"vllm_server_port must be in 1..65535, got {self.vllm_server_port}")
        for name in ("startup", "connect", "request", "sync"):
            if getattr(self, f"vllm_server_{name}_timeout") <= 0:
                raise ValueError(f"vllm_server_{name}_timeout must be > 0 seconds")
        if self.vllm_server_retries < 0:
            raise ValueError(f"vllm_server_retries must be >= 0, got {self.vllm_server_retries}")
