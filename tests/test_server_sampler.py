"""Server mode without vllm: the `grpo serve` command line, the HTTP client's failures (unreachable, no answer,
HTTP errors), and training runs against a stand-in server (tests/fake_vllm.py) that stops answering a weight
sync or goes away mid-run: each run ends with an error naming the server, bounded by its timeout, and the last
checkpoint stays complete and loadable. The real vLLM server is in tests/test_server_vllm.py."""

import os
import time

import pytest
import torch

from grpo.config import ModelArguments, VLLMArguments, parse_config
from grpo.export import load_weights_into
from grpo.model import TINY, load_policy, load_tokenizer
from grpo.samplers.base import SamplingConfig, build_sampler
from grpo.samplers.server_client import ServerClient, ServerError, ServerTimeout
from grpo.serve import _parser, build_command, free_port, lora_rank_for_vllm
from tests.conftest import SMOKE_RECIPE
from tests.fake_vllm import FakeVLLMServer

BOUND_S = 60  # the hangs below are endless; a run must end long before this


def test_serve_command_sets_what_weight_sync_needs():
    ns = _parser().parse_args(["tiny-random-llama-hd32", "--port", "9123", "--lora_rank", "4", "--enforce_eager"])
    cmd, env = build_command(ns, ["--max-loras", "2"])
    joined = " ".join(cmd)
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"
    assert "--logprobs-mode processed_logprobs" in joined and "--port 9123" in joined
    assert "--enable-lora --max-lora-rank 8" in joined  # rank 4 rounded up to a rank vLLM accepts
    assert os.path.isfile(os.path.join(cmd[cmd.index("--model") + 1], "config.json"))  # built-in name -> folder
    assert cmd[-2:] == ["--max-loras", "2"] and "--enforce-eager" in cmd
    if not torch.cuda.is_available():
        assert "--dtype float32" in joined and "--weight-transfer-config" not in joined
    plain, plain_env = build_command(_parser().parse_args(["some/model"]), [])
    assert "--enable-lora" not in plain and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in plain_env
    assert [lora_rank_for_vllm(r) for r in (1, 2, 8, 9, 300)] == [1, 8, 8, 16, 320]
    with pytest.raises(ValueError, match="512"):
        lora_rank_for_vllm(600)


def test_unreachable_server_fails_naming_it():
    port = free_port()  # nothing listens there
    client = ServerClient("127.0.0.1", port, connect_timeout=1, retries=1, retry_wait=0.1)
    with pytest.raises(ServerError, match=rf"127\.0\.0\.1:{port} is unreachable: generation failed after 2"):
        client.post("/v1/completions", {}, timeout=5, what="generation")
    with pytest.raises(ServerError, match=rf"GET /health at 127\.0\.0\.1:{port} within 0\.5 s"):
        client.wait_until_healthy(0.5, poll=0.1)


def test_no_answer_is_a_timeout_and_http_errors_carry_the_servers_text():
    with FakeVLLMServer([1], hang_reload_from=1) as fake:
        client = ServerClient("127.0.0.1", fake.port, retries=3)
        assert client.wait_until_healthy(5) < 5
        start = time.monotonic()
        with pytest.raises(ServerTimeout, match=rf"127\.0\.0\.1:{fake.port}: weight sync got no answer within 1 s"):
            client.post("/collective_rpc", {}, timeout=1, what="weight sync")
        assert time.monotonic() - start < BOUND_S  # not retried: bounded by the timeout
        with pytest.raises(ServerError, match="HTTP 404"):
            client.get("/no_such_route", timeout=5, what="testing")


def test_a_server_without_processed_logprobs_is_refused(tokenizer, tiny_model):
    with FakeVLLMServer([tokenizer.eos_token_id]) as fake:
        fake.logprobs_mode = "raw_logprobs"
        args = VLLMArguments(vllm_server_port=fake.port)
        with pytest.raises(ServerError, match="raw_logprobs log-probs; the trainer needs processed_logprobs"):
            build_sampler("vllm_server", tiny_model, tokenizer, SamplingConfig(8), args)


def _trainer(tmp_path, port: int, *flags: str):
    from grpo.trainer import GRPOTrainer

    argv = [SMOKE_RECIPE, "--sampler", "vllm_server", "--vllm_server_port", str(port), "--output_dir", str(tmp_path)]
    argv += ["--max_steps", "3", "--save_steps", "1", "--vllm_server_retries", "1", *flags]
    return GRPOTrainer(*parse_config(argv))


def _record_checkpoints(trainer, after=None) -> dict:
    """Wrap ``save_checkpoint``: keep a copy of the weights each checkpoint saves, then run ``after()``."""
    saved = {}
    original = trainer.save_checkpoint

    def save():
        path = original()
        saved[path] = {k: v.detach().clone() for k, v in trainer.unwrapped_policy.state_dict().items()}
        if after is not None:
            after()
        return path

    trainer.save_checkpoint = save
    return saved


def _assert_only_complete_checkpoints(output_dir, saved: dict, model: str = TINY) -> None:
    """The checkpoints on disk are exactly those saved, each complete, its weights loadable and equal to the
    policy's at save time; no temporary folder is left."""
    names = sorted(os.listdir(output_dir))
    assert [n for n in names if n.startswith("checkpoint-")] == sorted(os.path.basename(p) for p in saved)
    assert not [n for n in names if n.startswith(".")]  # no half-written checkpoint
    for path, weights in saved.items():
        fresh = load_policy(ModelArguments(model_name_or_path=model))
        load_weights_into(fresh, os.path.join(path, "model"))
        for name, value in fresh.state_dict().items():
            assert torch.equal(value, weights[name]), name


def test_a_sync_that_never_answers_ends_the_run_within_its_timeout(tmp_path):
    tok = load_tokenizer(ModelArguments(model_name_or_path=TINY))
    # reloads: 1 at start, 2 after step 1 (then checkpoint-1), 3 after step 2: never answered
    with FakeVLLMServer(tok("<answer>4</answer>")["input_ids"] + [tok.eos_token_id], hang_reload_from=3) as fake:
        trainer = _trainer(tmp_path, fake.port, "--vllm_server_sync_timeout", "2")
        saved = _record_checkpoints(trainer)
        start = time.monotonic()
        with pytest.raises(
            ServerTimeout, match=rf"{fake.port}: weight sync \(reload_weights\) got no answer within 2 s"
        ):
            trainer.train()
        assert time.monotonic() - start < BOUND_S
        assert trainer.global_step == 2 and fake.reloads == 3
    _assert_only_complete_checkpoints(tmp_path, saved)
    assert [os.path.basename(p) for p in saved] == ["checkpoint-1"]


def test_a_server_that_goes_away_mid_run_ends_it_with_a_clear_error(tmp_path):
    tok = load_tokenizer(ModelArguments(model_name_or_path=TINY))
    with FakeVLLMServer(tok("<answer>4</answer>")["input_ids"] + [tok.eos_token_id]) as fake:
        trainer = _trainer(tmp_path, fake.port)
        saved = _record_checkpoints(trainer, after=fake.close)  # the server dies right after checkpoint-1
        start = time.monotonic()
        with pytest.raises(ServerError, match=rf"{fake.port} is unreachable: generation failed after 2 attempt"):
            trainer.train()
        assert time.monotonic() - start < BOUND_S
        assert trainer.global_step == 1
    _assert_only_complete_checkpoints(tmp_path, saved)
