"""Verifiers for best-of-N: each scores candidate completions, and best-of-N keeps the highest score.

A verifier is ``f(problems, completions, columns) -> list[float | None]`` (one score per completion; None =
no score). Built from a spec string by :func:`build_verifier`, through the :data:`VERIFIERS` registry:

* ``reward:<name>``: a registered reward function (``rewards.REWARDS``), called in TRL's convention with the
  problem's columns (``solution`` ...). ``reward:accuracy`` sees the gold answer: an oracle, so its best-of-N
  equals pass@N; ``reward:format`` or ``reward:cosine`` do not.
* ``rm:<path or hub id>``: an outcome reward model, any ``AutoModelForSequenceClassification`` (Cobbe et al.
  2021, "Training Verifiers to Solve Math Word Problems"): the score is its logit (one label) or the log-prob
  of its last label (several labels) on the problem as the user turn and the completion as the reply.
* ``self``: self-verification by the policy (a generative verifier: Zhang et al. 2024, "Generative Verifiers:
  Reward Modeling as Next-Token Prediction"): the policy reads the problem and the candidate, is asked whether
  the final answer is correct, and the score is ``P("Yes") / (P("Yes") + P("No"))`` for its next token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from grpo.samplers.decode import left_pad

Verifier = Callable[[Sequence[str], Sequence[str], dict[str, list]], list]

SELF_VERIFY_PROMPT = (
    "Here is a math problem and a proposed solution.\n\nProblem:\n{problem}\n\nProposed solution:\n{completion}\n\n"
    "Is the final answer of the proposed solution correct? Answer with Yes or No only."
)

VERIFIERS: dict[str, Callable[..., Verifier]] = {}


def register_verifier(kind: str):
    """Decorator adding a verifier builder under ``kind``:
    ``builder(arg, *, model, tokenizer, think_prefilled, reward_kwargs) -> Verifier``.
    Raises ``ValueError`` when the kind is taken."""

    def decorator(builder):
        if kind in VERIFIERS:
            raise ValueError(f"a verifier kind {kind!r} is already registered")
        VERIFIERS[kind] = builder
        return builder

    return decorator


def build_verifier(
    spec: str,
    *,
    model=None,
    tokenizer=None,
    think_prefilled: bool = False,
    reward_kwargs: dict[str, dict] | None = None,
) -> Verifier:
    """The verifier for ``spec`` = ``kind`` or ``kind:arg`` (``reward:format``, ``rm:PATH``, ``self``);
    ``model``/``tokenizer``: the policy (for ``self``); ``think_prefilled``: the prompt template opens ``<think>``
    (bound into rewards that take it, as the trainer does); ``reward_kwargs``: ``{reward name: settings}`` for
    ``reward:`` verifiers, as a recipe's ``reward_kwargs``. Raises ``ValueError`` for an unknown kind."""
    kind, _, arg = spec.partition(":")
    if kind not in VERIFIERS:
        raise ValueError(f"unknown verifier {spec!r}; kinds: {sorted(VERIFIERS)} (e.g. reward:format, rm:PATH, self)")
    return VERIFIERS[kind](
        arg, model=model, tokenizer=tokenizer, think_prefilled=think_prefilled, reward_kwargs=reward_kwargs or {}
    )


@register_verifier("reward")
def reward_verifier(
    name: str, *, think_prefilled: bool = False, reward_kwargs: dict[str, dict] | None = None, **_: Any
) -> Verifier:
    """A reward function as a verifier: ``f(completions, **columns)``; ``problems`` reach it as ``prompts``.
    Its settings are ``reward_kwargs[name]`` (e.g. ``{"strict": False}``); ``think_prefilled`` is bound when
    the reward takes it (format rewards) and the settings do not fix it, as in training
    (:func:`grpo.scoring.fill_run_settings`)."""
    from grpo.scoring import fill_run_settings
    from rewards import get_reward_funcs

    if not name:
        raise ValueError("a reward verifier needs a reward name: reward:<name>")
    own = {name: (reward_kwargs or {}).get(name, {})}
    settings = fill_run_settings([name], own, {"think_prefilled": think_prefilled})[name]
    (func,) = get_reward_funcs([name], {name: settings} if settings else None)

    def verify(problems: Sequence[str], completions: Sequence[str], columns: dict[str, list]) -> list:
        return func(list(completions), **{"prompts": list(problems), **columns})

    verify.__name__ = f"reward:{name}"
    return verify


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _render(tokenizer, user: str, reply: str | None) -> str:
    """Chat-template text of a user turn and an optional assistant reply (with a generation prompt when the
    reply is None); plain text when the tokenizer has no chat template."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}] + ([{"role": "assistant", "content": reply}] if reply else [])
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=reply is None)
    return f"{user}\n\n{reply}" if reply is not None else f"{user}\nAnswer:"


class RewardModelVerifier:
    """An outcome reward model (sequence classifier) scoring ``(problem, completion)`` pairs in batches.

    Batches are right-padded (the model pools its last non-pad token, as in TRL's reward training).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, batch_size: int = 8):
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size

    @classmethod
    def from_pretrained(
        cls, path: str, *, dtype: torch.dtype = torch.float32, device: str | None = None, batch_size: int = 8
    ) -> RewardModelVerifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), AutoTokenizer.from_pretrained(path), batch_size=batch_size)

    @torch.no_grad()
    def __call__(
        self, problems: Sequence[str], completions: Sequence[str], columns: dict[str, list] | None = None
    ) -> list:
        texts = [_render(self.tokenizer, p, c) for p, c in zip(problems, completions)]
        scores: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[i : i + self.batch_size]]
            width = max(len(x) for x in ids)
            batch = torch.tensor([x + [self.tokenizer.pad_token_id] * (width - len(x)) for x in ids])  # [b, L]
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])  # [b, L]
            logits = self.model(
                input_ids=batch.to(_device(self.model)), attention_mask=mask.to(_device(self.model))
            ).logits
            logits = logits.float()  # [b, labels]
            values = logits[:, 0] if logits.shape[1] == 1 else logits.log_softmax(-1)[:, -1]  # [b]
            scores.extend(values.tolist())
        return scores


class SelfVerifier:
    """Self-verification: the policy's ``P("Yes") / (P("Yes") + P("No"))`` after :data:`SELF_VERIFY_PROMPT`.

    Batches are left-padded with explicit position ids (so padding does not change the scores) and only the
    last position's logits are computed (``logits_to_keep=1``: ``[b, 1, V]``, never ``[b, L, V]``).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, batch_size: int = 8, prompt: str = SELF_VERIFY_PROMPT):
        self.model, self.tokenizer, self.batch_size, self.prompt = model, tokenizer, batch_size, prompt
        space = "" if getattr(tokenizer, "chat_template", None) else " "
        self.yes_id = tokenizer(space + "Yes", add_special_tokens=False)["input_ids"][0]
        self.no_id = tokenizer(space + "No", add_special_tokens=False)["input_ids"][0]
        if self.yes_id == self.no_id:
            raise ValueError("the tokenizer gives 'Yes' and 'No' the same first token")

    @torch.no_grad()
    def __call__(
        self, problems: Sequence[str], completions: Sequence[str], columns: dict[str, list] | None = None
    ) -> list:
        texts = [
            _render(self.tokenizer, self.prompt.format(problem=p, completion=c), None)
            for p, c in zip(problems, completions)
        ]
        was_training = self.model.training
        self.model.eval()
        scores: list[float] = []
        try:
            for i in range(0, len(texts), self.batch_size):
                ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[i : i + self.batch_size]]
                batch, mask = left_pad(ids, self.tokenizer.pad_token_id)  # [b, L], [b, L]
                positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [b, L]
                device = _device(self.model)
                logits = (
                    self.model(
                        input_ids=batch.to(device),
                        attention_mask=mask.to(device),
                        position_ids=positions.to(device),
                        logits_to_keep=1,
                    )
                    .logits[:, -1]
                    .float()
                )  # [b, V]
                pair = logits[:, [self.yes_id, self.no_id]].softmax(-1)  # [b, 2]
                scores.extend(pair[:, 0].tolist())
        finally:
            self.model.train(was_training)
        return scores


@register_verifier("rm")
def reward_model_verifier(path: str, **_: Any) -> Verifier:
    if not path:
        raise ValueError("a reward-model verifier needs a model: rm:<path or hub id>")
    return RewardModelVerifier.from_pretrained(path)


@register_verifier("self")
def self_verifier(arg: str, *, model=None, tokenizer=None, **_: Any) -> Verifier:
    if model is None or tokenizer is None:
        raise ValueError("the self verifier needs the policy model and its tokenizer")
    return SelfVerifier(model, tokenizer)
