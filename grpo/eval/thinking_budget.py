"""Sampling for evaluation: plain sampling, and thinking budgets.

A thinking budget caps the tokens spent before the end-of-thinking tag ``</think>``: a completion that
reaches the cap gets the tag inserted (``close_text``) and then generates its answer. With a minimum
(s1's budget forcing: Muennighoff et al. 2025, "s1: Simple test-time scaling", sec. 3.1), a completion that
closes its thinking too early has the tag replaced by "Wait" and thinks on, until the minimum is reached.

Generation continues in rounds: the tokens so far are appended to the prompt ids and ``sampler.generate``
is called again, through a sampler with other settings (``Sampler.with_config``: a cap, a stop string).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from grpo.samplers import Sampler
from grpo.samplers.hf import first_stop_end
from grpo.scoring import completion_id_lists


@dataclass
class Generation:
    """One sampled completion. Lengths are in tokens."""

    completion: str  # decoded text (special tokens removed)
    completion_ids: list[int]  # [T] every token after the prompt: sampled, inserted ("Wait", "</think>") and EOS
    thinking_tokens: int  # tokens before the end-of-thinking tag (all when there is none; see count_thinking_tokens)
    truncated: bool  # the last generation round hit its length cap without EOS
    waits: int = 0  # "Wait" insertions (budget forcing)
    forced_close: bool = False  # the thinking cap was reached and the tag inserted

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)


@dataclass(frozen=True)
class ThinkingBudget:
    """Budget settings. ``max_thinking_tokens``: the cap (then ``close_text`` is inserted);
    ``min_thinking_tokens``: s1's minimum (an earlier ``end_think`` is replaced by ``wait_text``), at most
    ``max_waits`` times per completion (None: no limit); ``max_answer_tokens``: cap of the answer after
    the thinking block."""

    max_thinking_tokens: int
    min_thinking_tokens: int = 0
    max_answer_tokens: int = 256
    max_waits: int | None = None
    end_think: str = "</think>"
    close_text: str = "\n</think>\n"
    wait_text: str = "Wait"

    def __post_init__(self) -> None:
        if self.max_thinking_tokens < 1 or self.max_answer_tokens < 1:
            raise ValueError(
                f"max_thinking_tokens and max_answer_tokens must be >= 1, got "
                f"{self.max_thinking_tokens} and {self.max_answer_tokens}"
            )
        if not 0 <= self.min_thinking_tokens <= self.max_thinking_tokens:
            raise ValueError(
                f"min_thinking_tokens must be in [0, max_thinking_tokens={self.max_thinking_tokens}], "
                f"got {self.min_thinking_tokens}"
            )
        if self.max_waits is not None and self.max_waits < 0:
            raise ValueError(f"max_waits must be >= 0 or None, got {self.max_waits}")
        if self.end_think not in self.close_text:
            raise ValueError(f"close_text {self.close_text!r} must contain end_think {self.end_think!r}")


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def thought_ids(tokenizer, ids: list[int], end_think: str) -> list[int] | None:
    """Token ids whose text is exactly the text of ``ids`` before the first ``end_think``: the sampled
    tokens wholly before it plus, re-encoded, the characters of a token that straddles it. None when the
    text has no ``end_think``."""
    end = first_stop_end(tokenizer, ids, (end_think,))
    if end is None:
        return None
    text = tokenizer.decode(ids[:end], skip_special_tokens=True)
    before = text[: text.index(end_think)]
    for j in range(end - 1, -1, -1):  # a few steps: only the tokens of the tag are dropped
        prefix = tokenizer.decode(ids[:j], skip_special_tokens=True)
        if before.startswith(prefix) and end_think not in prefix:
            rest = before[len(prefix) :]
            return ids[:j] + (_encode(tokenizer, rest) if rest else [])
    return _encode(tokenizer, before)


def count_thinking_tokens(tokenizer, ids: list[int], text: str, end_think: str = "</think>") -> int:
    """Tokens of a completion before ``end_think``: all ``len(ids)`` when its ``text`` has none, else the total
    minus the re-encoded length of the text from the tag on. The part after the tag is short, so this costs
    one small encode instead of O(log T) decodes of the whole completion; it can differ from the sampled
    split by a token at the boundary."""
    at = text.find(end_think)
    if at < 0:
        return len(ids)
    return max(0, len(ids) - len(_encode(tokenizer, text[at:])))


def generate_plain(
    sampler: Sampler, tokenizer, prompt_ids: list[list[int]], num_samples: int, *, end_think: str = "</think>"
) -> list[Generation]:
    """``num_samples`` completions per prompt with the sampler's own settings; B*K generations, the K of
    prompt b consecutive. ``thinking_tokens``: see :func:`count_thinking_tokens`."""
    rollout = sampler.generate(prompt_ids, num_samples)
    return [
        Generation(text, ids, count_thinking_tokens(tokenizer, ids, text, end_think), bool(truncated))
        for text, ids, truncated in zip(rollout.completions, completion_id_lists(rollout), rollout.truncated.tolist())
    ]


@dataclass
class _Sequence:
    """Generation state of one completion under a budget."""

    prompt: list[int]
    ids: list[int] = field(default_factory=list)
    thinking: int = 0
    waits: int = 0
    forced: bool = False
    truncated: bool = False
    phase: str = "think"  # think -> answer -> done


def generate_with_budget(
    sampler: Sampler, tokenizer, prompt_ids: list[list[int]], num_samples: int, budget: ThinkingBudget
) -> list[Generation]:
    """``num_samples`` completions per prompt under a thinking budget (B*K generations, the K of prompt b
    consecutive), with the sampler's temperature and top-p.

    Thinking rounds stop at ``end_think`` or at the remaining budget. A completion that closes its thinking
    with fewer than ``min_thinking_tokens`` has the tag replaced by ``wait_text`` and goes on; one that
    reaches ``max_thinking_tokens`` gets ``close_text`` appended; one that ends (EOS) inside its thinking is
    finished. Then every closed completion generates its answer (at most ``max_answer_tokens``).
    """
    sequences = [_Sequence(list(p)) for p in prompt_ids for _ in range(num_samples)]
    while thinking := [s for s in sequences if s.phase == "think"]:
        _think_round(sampler, tokenizer, thinking, budget)
    answering = [s for s in sequences if s.phase == "answer"]
    if answering:
        config = replace(sampler.config, max_completion_length=budget.max_answer_tokens, stop=())
        rollout = sampler.with_config(config).generate([s.prompt + s.ids for s in answering], 1)
        for s, ids, truncated in zip(answering, completion_id_lists(rollout), rollout.truncated.tolist()):
            s.ids, s.truncated, s.phase = s.ids + ids, bool(truncated), "done"
    return [
        Generation(tokenizer.decode(s.ids, skip_special_tokens=True), s.ids, s.thinking, s.truncated, s.waits, s.forced)
        for s in sequences
    ]


def _close(s: _Sequence, tokenizer, budget: ThinkingBudget) -> None:
    """The cap is reached: insert the end-of-thinking text and go on to the answer."""
    s.ids = s.ids + _encode(tokenizer, budget.close_text)
    s.forced, s.phase = True, "answer"


def _think_round(sampler: Sampler, tokenizer, sequences: list[_Sequence], budget: ThinkingBudget) -> None:
    """One thinking round for every sequence still thinking (updates them in place).

    All rows are generated up to the largest remaining budget and each is cut to its own: the tokens kept
    are distributed exactly as if that row had been generated with its own cap.
    """
    for s in sequences:
        if s.thinking >= budget.max_thinking_tokens:
            _close(s, tokenizer, budget)
    live = [s for s in sequences if s.phase == "think"]
    if not live:
        return
    remaining = [budget.max_thinking_tokens - s.thinking for s in live]
    config = replace(sampler.config, max_completion_length=max(remaining), stop=(budget.end_think,))
    rollout = sampler.with_config(config).generate([s.prompt + s.ids for s in live], 1)
    for s, r, ids, truncated in zip(live, remaining, completion_id_lists(rollout), rollout.truncated.tolist()):
        kept = ids[:r]
        thought = thought_ids(tokenizer, kept, budget.end_think)
        if thought is not None:
            _on_end_think(s, kept, thought, tokenizer, budget)
        elif len(ids) <= r and not truncated:  # EOS inside the budget: thinking never closed, finished
            s.ids, s.thinking, s.phase = s.ids + kept, s.thinking + len(kept), "done"
        else:  # the cap
            s.ids, s.thinking = s.ids + kept, s.thinking + len(kept)
            _close(s, tokenizer, budget)


def _on_end_think(s: _Sequence, kept: list[int], thought: list[int], tokenizer, budget: ThinkingBudget) -> None:
    """The model closed its thinking: below the minimum, "Wait" replaces the tag (s1) when at least one
    thinking token of the cap is left after it; else the tag is kept."""
    wait = _encode(tokenizer, budget.wait_text)
    may_wait = budget.max_waits is None or s.waits < budget.max_waits
    fits = s.thinking + len(thought) + len(wait) < budget.max_thinking_tokens  # room to think on after "Wait"
    if s.thinking + len(thought) < budget.min_thinking_tokens and may_wait and fits:
        s.ids, s.thinking, s.waits = s.ids + thought + wait, s.thinking + len(thought) + len(wait), s.waits + 1
    else:
        s.ids, s.thinking, s.phase = s.ids + kept, s.thinking + len(thought), "answer"
