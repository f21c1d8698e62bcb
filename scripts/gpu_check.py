"""GPU check: a few GRPO steps of SmolLM2-135M-Instruct in bf16 with the transformers sampler, and what they cost.

Run it through ``scripts/gpu_check.sh MODEL_DIR`` (docs/vllm.md, "GPU check", says how to bring the model folder
to a machine without network). It needs only torch, transformers, peft and accelerate (and what they depend on):
the prompts are written here, the reward is its own (``gpu_check_digits``), the configuration is built without
trl's parser, and none of vllm, trl, deepspeed, math-verify, datasets, gguf or reasoning-gym is imported
(tests/test_gpu_check.py runs it in an environment that has only those four packages).

Printed, over the steps after the first (warm-up):

- sampled tokens/s: completion tokens generated / seconds in the sampler;
- training tokens/s: tokens (prompt + completion, padding excluded) through forward and backward / seconds in
  the update;
- MFU of the update: training tokens/s x FLOPs per token / peak, with FLOPs per token = 6 N + 12 L H Q S
  (Chowdhery et al. 2022, "PaLM", appendix B: N = parameters of the matrix multiplications, the tied output
  head counted once, the input embedding lookup not at all; L layers, H heads, Q head size, S the mean
  sequence length); peak = ``--peak_tflops`` (default 989: an H200's, or an H100 SXM's, dense bf16 TFLOP/s);
- peak GPU memory (``torch.cuda.max_memory_allocated``);
- the bf16-vs-fp32 loss difference on one fixed batch (fixed completions, fixed advantages), fp32 model vs bf16
  autocast as ``mixed_precision: bf16`` trains it: token NLL, GRPO loss, largest per-token log-prob gap.

On a machine without CUDA it runs the same steps in fp32 (MFU and memory: n/a), to show that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBLEMS = [
    (f"What is {a} + {b}? Answer with the number.", str(a + b)) for a, b in zip(range(11, 43, 2), range(7, 90, 5))
]


def digit_share(completions, **kwargs) -> list[float]:
    """This script's reward: the share of a completion's characters that are digits (graded, so groups differ)."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def flops_per_token(model: torch.nn.Module, seq_len: float) -> tuple[int, float]:
    """``(N, 6 N + 12 L H Q S)``: matmul parameters and training FLOPs per token (PaLM, appendix B)."""
    config = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in name)
    if getattr(config, "tie_word_embeddings", False):
        n += model.get_input_embeddings().weight.numel()  # the output head's matmul
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * head_dim * seq_len
    return n, 6 * n + attention


def train(ns: argparse.Namespace, out_dir: str, bf16: bool) -> tuple[object, list[dict]]:
    """``steps`` GRPO steps (transformers sampler); returns the trainer and per-step records with token counts."""
    from grpo.config import DataArguments, GRPOArguments, ModelArguments
    from grpo.trainer import GRPOTrainer
    from rewards.registry import REWARDS, register_reward

    if "gpu_check_digits" not in REWARDS:
        register_reward("gpu_check_digits")(digit_share)
    data = os.path.join(out_dir, "problems.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps({"question": q, "answer": a}) + "\n" for q, a in PROBLEMS)
    model_args = ModelArguments(model_name_or_path=ns.model_dir)
    data_args = DataArguments(dataset_name=data, answer_format="raw", system_prompt="")
    args = GRPOArguments(
        output_dir=os.path.join(out_dir, "run"),
        max_steps=ns.steps,
        learning_rate=1e-6,
        mixed_precision="bf16" if bf16 else "no",
        num_generations=ns.num_generations,
        per_device_train_batch_size=ns.batch,
        max_completion_length=ns.max_completion_length,
        sampler="hf",
        reward_funcs=["gpu_check_digits"],
        beta=0.0,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model_args, data_args, args)
    counted, update = [], trainer.update

    def counting_update(batch):
        start = time.perf_counter()
        stats = update(batch)
        mask = torch.cat([batch.prompt_mask, batch.completion_mask.long()], dim=1)  # [N, P+T]
        seconds = time.perf_counter() - start
        counted.append({"tokens": int(mask.sum()), "mean_len": float(mask.sum(1).float().mean()), "update_s": seconds})
        return stats

    trainer.update = counting_update
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    with open(os.path.join(args.output_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return trainer, [{**r, **c} for r, c in zip(records, counted)]


@torch.no_grad()
def fixed_batch(trainer) -> tuple:
    """The first 4 prompts, each with 4 fixed completions (the right answer and three wrong ones), left-padded."""
    from grpo.samplers.decode import left_pad

    tok, rows = trainer.tokenizer, trainer.dataset.rows[:4]
    prompts, completions = [], []
    for row in rows:
        for offset in (0, 1, 10, 100):
            prompts.append(row["prompt_ids"])
            completions.append(tok(f"The answer is {int(row['solution']) + offset}.")["input_ids"] + [tok.eos_token_id])
    ids, mask = left_pad(prompts, tok.pad_token_id)
    comp, comp_mask = left_pad([c[::-1] for c in completions], tok.pad_token_id)  # right-pad via reversal
    return ids, mask, comp.flip(1), comp_mask.flip(1)


def loss_difference(model_dir: str, trainer) -> dict[str, float]:
    """One fixed batch with fixed advantages, with the fp32 model and under bf16 autocast (same weights): the mean
    token NLL, the GRPO loss with the fp32 log-probs as old log-probs (on-policy the loss's value is -mean(A)
    whatever the log-probs; against fixed old log-probs the ratio carries the bf16 error), and the largest
    per-token log-prob difference."""
    from grpo.algo.loss import policy_loss
    from grpo.config import ModelArguments
    from grpo.logprobs import completion_logprobs
    from grpo.model import load_policy

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_policy(ModelArguments(model_name_or_path=model_dir)).to(device).float()
    ids, mask, comp, comp_mask = (t.to(device) for t in fixed_batch(trainer))
    advantages = torch.tensor([1.0, -0.5, -0.5, 0.0] * 4, device=device)
    m = comp_mask.float()  # [N, T]
    out, logprobs = {}, {}
    for name, autocast in (("fp32", False), ("bf16", True)):
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            logprobs[name], _ = completion_logprobs(model, ids, mask, comp, comp_mask, 1.0)  # [N, T] float32
        old = logprobs["fp32"]
        out[f"nll_{name}"] = float(-(logprobs[name] * m).sum() / m.sum())
        out[f"grpo_{name}"] = float(policy_loss(logprobs[name], old, advantages, m, loss_type="grpo")[0])
    out["max_token_diff"] = float(((logprobs["bf16"] - logprobs["fp32"]).abs() * m).max())
    return out


def report(trainer, records: list[dict], peak_tflops: float, losses: dict[str, float]) -> None:
    on_gpu = torch.cuda.is_available()
    timed = records[1:] or records  # the first step warms up kernels and caches
    sampled = statistics.mean(r["sample_tokens_per_s"] for r in timed)
    trained = sum(r["tokens"] for r in timed) / sum(r["update_s"] for r in timed)
    n, per_token = flops_per_token(trainer.unwrapped_policy, statistics.mean(r["mean_len"] for r in timed))
    print(f"device: {torch.cuda.get_device_name() if on_gpu else 'cpu (no CUDA: fp32, MFU n/a)'}")
    print(
        f"steps: {len(records)} (timed: {len(timed)}), step time {statistics.mean(r['step_time_s'] for r in timed):.2f} s"
    )
    print(f"sampled tokens/s: {sampled:.1f}")
    print(f"training tokens/s: {trained:.1f}")
    print(f"FLOPs/token (6N + 12LHQS): {per_token:.4g} with N = {n / 1e6:.1f}M matmul parameters")
    if on_gpu:
        mfu = trained * per_token / (peak_tflops * 1e12)
        print(f"MFU (update): {100 * mfu:.2f}% of {peak_tflops:g} TFLOP/s")
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    else:
        print("MFU (update): n/a on CPU\npeak memory: n/a on CPU")
    for key, label in (("nll", "token NLL"), ("grpo", "GRPO loss (old = fp32 log-probs)")):
        fp32, bf16 = losses[f"{key}_fp32"], losses[f"{key}_bf16"]
        print(f"{label}: fp32 {fp32:.6f}, bf16 autocast {bf16:.6f}, |diff| {abs(bf16 - fp32):.3e}")
    print(f"largest per-token |log-prob bf16 - fp32|: {losses['max_token_diff']:.3e}")


def pack(model_dir: str, out: str, shard_mib: int = 60) -> None:
    """A bf16 copy of ``model_dir`` in ``out``, its weights in safetensors shards of at most ``shard_mib`` MiB
    (transformers' sharded format, loaded as is), with the tokenizer: to carry to a machine file by file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    model.save_pretrained(out, max_shard_size=shard_mib * 2**20)  # bytes
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    for name in sorted(os.listdir(out)):
        print(f"{os.path.getsize(os.path.join(out, name)) / 2**20:8.1f} MiB  {os.path.join(out, name)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", help="a local SmolLM2-135M-Instruct folder (config, tokenizer, safetensors)")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps (the first is not timed)")
    parser.add_argument("--batch", type=int, default=64, help="completions per step (one micro-batch)")
    parser.add_argument("--num_generations", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max_completion_length", type=int, default=256, help="most tokens per completion")
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H200: 989)")
    parser.add_argument("--pack_to", help="write a bf16 copy in shards of <= 60 MiB to this folder, and stop")
    ns = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(ns.model_dir, "config.json")):
        raise SystemExit(f"{ns.model_dir}: not a model folder (no config.json)")
    if ns.pack_to:
        pack(ns.model_dir, ns.pack_to)
        return 0
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    with tempfile.TemporaryDirectory(prefix="grpo-gpu-check-") as out:
        trainer, records = train(ns, out, bf16)
        report(trainer, records, ns.peak_tflops, loss_difference(ns.model_dir, trainer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
