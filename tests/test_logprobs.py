import torch

from grpo.logprobs import completion_logprobs, token_logprobs_from_logits
from grpo.samplers.decode import left_pad


def _reference(model, prompt, completion, temperature):
    """Unpadded single-sequence forward, log-softmax over the full vocabulary in float64."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double() / temperature  # [T, V]
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_matches_unpadded_reference_under_left_padding(tiny_model):
    torch.manual_seed(0)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    completions = [[20, 21, 22], [23, 24, 25, 26], [27]]
    p_ids, p_mask = left_pad(prompts, pad_id=2)
    t = max(map(len, completions))
    c_ids = torch.full((3, t), 2)
    c_mask = torch.zeros((3, t), dtype=torch.long)
    for i, c in enumerate(completions):
        c_ids[i, : len(c)] = torch.tensor(c)
        c_mask[i, : len(c)] = 1
    with torch.no_grad():
        lp, ent = completion_logprobs(
            tiny_model, p_ids, p_mask, c_ids, c_mask, temperature=0.7, with_entropy=True, chunk_rows=2
        )
    assert lp.shape == ent.shape == (3, t)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ref = _reference(tiny_model, p, c, 0.7)
        torch.testing.assert_close(lp[i, : len(c)].double(), ref, atol=2e-5, rtol=0)


def test_padding_garbage_changes_nothing(tiny_model):
    p_ids, p_mask = left_pad([[5, 6, 7], [8, 9]], pad_id=2)
    c_ids = torch.tensor([[20, 21, 2], [22, 23, 24]])
    c_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    with torch.no_grad():
        clean, _ = completion_logprobs(tiny_model, p_ids, p_mask, c_ids, c_mask)
        p_ids2, c_ids2 = p_ids.clone(), c_ids.clone()
        p_ids2[p_mask == 0] = 999
        c_ids2[c_mask == 0] = 4242
        dirty, _ = completion_logprobs(tiny_model, p_ids2, p_mask, c_ids2, c_mask)
    valid = c_mask.bool()
    torch.testing.assert_close(clean[valid], dirty[valid], atol=1e-6, rtol=0)


def test_entropy_is_the_distribution_entropy_not_nll():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]]])  # uniform, then peaked
    lp, ent = token_logprobs_from_logits(logits, torch.tensor([[0, 1]]), with_entropy=True)
    torch.testing.assert_close(ent[0, 0], torch.log(torch.tensor(4.0)))
    assert ent[0, 1] < 0.01 and lp[0, 1] < -9  # a low-probability sample has high NLL but the entropy stays low
