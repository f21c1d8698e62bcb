"""``grpo export``: turn a checkpoint into a standalone Hugging Face folder.

The folder (LoRA merged into the base weights, safetensors, tokenizer with its chat template,
generation config) loads with ``AutoModelForCausalLM.from_pretrained`` and in vLLM, with no grpo or
peft installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file

from grpo.config import load_config
from grpo.model import load_base_model, load_tokenizer

ADAPTER_FILE = "adapter_model.safetensors"


def load_weights_into(model: torch.nn.Module, folder: str) -> None:
    """Load a ``save_pretrained`` folder into ``model`` in place: a LoRA adapter into a peft model,
    full weights otherwise. Raises ``FileNotFoundError`` when the folder has neither."""
    adapter = os.path.join(folder, ADAPTER_FILE)
    if os.path.isfile(adapter):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(adapter))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{adapter}: keys that the model does not have: {result.unexpected_keys[:5]}")
        return
    from transformers import AutoModelForCausalLM

    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder} holds neither {ADAPTER_FILE} nor a full model")
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.load_state_dict(saved.state_dict())


def load_checkpoint_model(checkpoint: str) -> tuple[torch.nn.Module, object]:
    """The trained policy of a checkpoint as a plain transformers model (LoRA merged) and its tokenizer."""
    model_args = load_config(os.path.join(checkpoint, "config.yaml"))[0]
    weights = os.path.join(checkpoint, "model")
    if model_args.use_peft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_base_model(model_args), weights).merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    from transformers import AutoTokenizer

    tokenizer = (
        AutoTokenizer.from_pretrained(weights)
        if os.path.isfile(os.path.join(weights, "tokenizer_config.json"))
        else load_tokenizer(model_args)
    )
    return model, tokenizer


def export_checkpoint(checkpoint: str, out_dir: str) -> str:
    """Write the standalone model of ``checkpoint`` to ``out_dir`` (atomically; replaces an existing folder).

    Raises ``FileNotFoundError`` when ``checkpoint`` has no ``config.yaml`` or ``model/``.
    """
    for required in ("config.yaml", "model"):
        if not os.path.exists(os.path.join(checkpoint, required)):
            raise FileNotFoundError(f"{checkpoint} is not a grpo checkpoint: {required} is missing")
    model, tokenizer = load_checkpoint_model(checkpoint)
    return save_standalone(model, tokenizer, out_dir)


def save_standalone(model, tokenizer, out_dir: str) -> str:
    """Save ``model`` (a peft model is merged first) with its tokenizer (left padding) as a transformers
    folder: written into a temp folder beside ``out_dir`` and renamed, replacing an existing ``out_dir``."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tokenizer.padding_side = "left"
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
