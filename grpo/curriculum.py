"""Online difficulty filtering: draw the prompts that still teach, skip the ones every sample solves or none does.

A group whose G completions all pass (or all fail) has equal rewards, so every advantage in it is 0 and the
rollout spent on it teaches nothing (``zero_std_frac`` counts such groups). :class:`CurriculumSampler` keeps a
running pass rate per prompt, measured on that prompt's own earlier groups, and skips a prompt *before* it is
sampled when its rate is at or below ``curriculum_min_pass_rate`` (too hard) or at or above
``curriculum_max_pass_rate`` (too easy). Defaults 0 and 1: skip the prompts whose groups were all failed or all
solved. A skipped prompt is drawn anyway with probability ``curriculum_revisit_prob``, so its rate is measured
again as the policy changes; a prompt never drawn is always accepted.

Pass rate: the share of a group's verifiable completions whose correctness reward (``accuracy`` or
``reasoning_gym``: :data:`grpo.train_metrics.CORRECTNESS_REWARDS`) is >= 1, the test of
:func:`grpo.train_metrics.correct_mask`. The running rate is an exponential moving average over the prompt's
groups: the first group sets it, each later group moves it by ``curriculum_ema`` of the difference
(``rate += ema * (group_rate - rate)``; ``ema = 1`` keeps the newest group alone). A group with no verifiable
completion leaves it unchanged.

Anchors: prime-rl's difficulty pools (a problem whose last group was all correct goes to an "easy" pool, all
wrong to a "hard" pool, and a set fraction of each batch is still drawn from those pools) and ROLL's difficulty
mask (``difficulty_low_threshold`` / ``difficulty_high_threshold`` on a group's mean score). ROLL's mask, like
DAPO's dynamic sampling (Yu et al. 2025, sec. 3.2, ``dynamic_sampling`` here), filters *after* sampling and so
pays for every group it drops; this sampler decides from earlier groups and never samples a skipped prompt.
The two combine: dynamic sampling still drops the groups that come out uninformative.

Order and determinism: candidates come from the same seeded permutation per epoch as
:class:`grpo.data.PromptSampler`, walked one candidate at a time (``position``); the revisit coin of the
candidate at ``position`` is :func:`revisit_draw` ``(seed, position)``, so the position is the whole random
state. Every process draws the same global batch and keeps its slice; pass rates are gathered from every
process and applied in the same order, so all processes hold the same table. ``state_dict`` (position, pass
rates, group counts, the draw awaiting its rewards) goes into ``trainer_state.json`` and restores exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from torch import Tensor

from grpo.data import PromptSampler, epoch_order, global_batch_size
from grpo.train_metrics import CORRECTNESS_REWARDS, correctness_index


def revisit_draw(seed: int, position: int) -> float:
    """The uniform number in [0, 1) that decides whether the skipped candidate at ``position`` is drawn anyway
    (< ``curriculum_revisit_prob``): a function of ``(seed, position)`` only (string seeds hash with SHA-512,
    independent of ``PYTHONHASHSEED``)."""
    return random.Random(f"grpo-curriculum:{seed}:{position}").random()


def pass_column(reward_names: list[str]) -> int:
    """Column of the correctness reward. Raises ``ValueError`` when ``reward_names`` has none."""
    column = correctness_index(reward_names)
    if column is None:
        raise ValueError(
            f"curriculum: needs a correctness reward ({' or '.join(CORRECTNESS_REWARDS)}) in reward_funcs to "
            f"measure pass rates; the rewards are {reward_names}"
        )
    return column


def group_pass_rates(per_func: Tensor, reward_names: list[str], num_generations: int) -> Tensor:
    """``[B]`` share of each group's verifiable completions whose correctness reward is >= 1 (NaN when none is
    verifiable), from ``per_func [B*G, F]``. Raises ``ValueError`` (:func:`pass_column`)."""
    column = pass_column(reward_names)
    values = per_func[:, column].reshape(-1, num_generations)  # [B, G]
    verifiable = ~values.isnan()  # [B, G]
    passed = (values >= 1.0) & verifiable  # [B, G]
    return passed.sum(1).float() / verifiable.sum(1).float()  # [B], 0/0 = NaN


class CurriculumSampler:
    """Prompt indices by running pass rate (module docstring); the interface of :class:`grpo.data.PromptSampler`.

    Args:
        num_rows: prompts in the data set. batch_size: prompts per process per draw (B).
        num_generations: G, completions per prompt (to read groups in :meth:`observe`).
        gather: concatenates a ``[B]`` tensor over processes in process order (None with one process).
    Raises ``ValueError`` when the data set is smaller than one global batch.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        seed: int,
        num_generations: int,
        *,
        min_pass_rate: float = 0.0,
        max_pass_rate: float = 1.0,
        revisit_prob: float = 0.1,
        ema: float = 0.5,
        num_processes: int = 1,
        process_index: int = 0,
        gather: Callable[[Tensor], Tensor] | None = None,
    ):
        self.global_batch = global_batch_size(num_rows, batch_size, num_processes)
        self.num_rows, self.batch_size, self.seed, self.num_generations = num_rows, batch_size, seed, num_generations
        self.low, self.high, self.revisit_prob, self.ema = min_pass_rate, max_pass_rate, revisit_prob, ema
        self.process_index, self.gather = process_index, gather
        self.position = 0  # candidates consumed from the stream of epoch orders
        self.batches_drawn = 0
        self.rates: dict[int, float] = {}  # prompt -> running pass rate (prompts with a verifiable group)
        self.groups: dict[int, int] = {}  # prompt -> groups observed (every prompt ever drawn has an entry)
        self.pending: list[int] = []  # the last global batch, awaiting its rewards
        self._order: tuple[int, list[int]] = (-1, [])
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.counts = {"skipped": 0, "revisited": 0, "forced": 0}
        self.drawn_rates: list[float] = []

    def in_band(self, index: int) -> bool:
        """True when prompt ``index`` is drawn without a coin: never measured, or low < rate < high."""
        rate = self.rates.get(index)
        return rate is None or self.low < rate < self.high

    def _candidate(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_rows)
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.num_rows, self.seed, epoch))
        return self._order[1][offset]

    def next_indices(self) -> list[int]:
        """This process's B prompt indices for the next rollout (the global batch is remembered for
        :meth:`observe`). Candidates are taken in stream order; one out of band is skipped unless its revisit
        coin comes up. Once a draw has scanned more candidates than the data set holds (nearly every prompt out
        of band), the rest of the batch is filled in stream order (counted as ``forced``)."""
        chosen: list[int] = []
        scanned = 0
        while len(chosen) < self.global_batch:
            index, coin = self._candidate(self.position), revisit_draw(self.seed, self.position)
            self.position += 1
            scanned += 1
            if index in chosen:  # an epoch boundary inside the draw: no prompt twice in one batch
                continue
            if not self.in_band(index):
                if scanned > self.num_rows:
                    self.counts["forced"] += 1
                elif coin < self.revisit_prob:
                    self.counts["revisited"] += 1
                else:
                    self.counts["skipped"] += 1
                    continue
            chosen.append(index)
        for index in chosen:
            self.groups.setdefault(index, 0)
            if index in self.rates:
                self.drawn_rates.append(self.rates[index])
        self.pending = chosen
        self.batches_drawn += 1
        start = self.process_index * self.batch_size
        return chosen[start : start + self.batch_size]

    def observe(self, per_func: Tensor, reward_names: list[str]) -> None:
        """Update the running pass rates of the last draw's prompts from this process's rewards
        ``per_func [B*G, F]``; with several processes every process must call it (a gather).
        Raises ``RuntimeError`` when the rewards do not match the last draw."""
        rates = group_pass_rates(per_func, reward_names, self.num_generations)  # [B]
        everyone = self.gather(rates) if self.gather is not None else rates  # [B * processes]
        if everyone.numel() != len(self.pending):
            raise RuntimeError(f"curriculum: rewards of {everyone.numel()} groups for a draw of {len(self.pending)}")
        for index, rate in zip(self.pending, everyone.tolist()):
            if rate != rate:  # no verifiable completion: nothing measured
                continue
            old = self.rates.get(index)
            self.rates[index] = rate if old is None else old + self.ema * (rate - old)
            self.groups[index] += 1
        self.pending = []

    def metrics(self) -> dict[str, float | None]:
        """``curriculum/*`` since the last call: candidates skipped, revisited and forced; prompts now in band,
        too easy (rate >= max) and too hard (rate <= min); prompts seen; mean running pass rate of the drawn
        prompts that had one (at draw time; None when none had)."""
        too_easy = sum(r >= self.high for r in self.rates.values())
        too_hard = sum(r <= self.low for r in self.rates.values())
        drawn = self.drawn_rates
        record = {f"curriculum/{k}": v for k, v in self.counts.items()}
        record.update(
            {
                "curriculum/active_prompts": self.num_rows - too_easy - too_hard,
                "curriculum/too_easy_prompts": too_easy,
                "curriculum/too_hard_prompts": too_hard,
                "curriculum/seen_prompts": len(self.groups),
                "curriculum/drawn_pass_rate": sum(drawn) / len(drawn) if drawn else None,
            }
        )
        self._reset_counts()
        return record

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state; floats round-trip exactly through JSON."""
        table = {
            "position": self.position,
            "rates": [[i, r] for i, r in self.rates.items()],
            "groups": [[i, n] for i, n in self.groups.items()],
            "pending": list(self.pending),
        }
        return {"batches_drawn": self.batches_drawn, "curriculum": table}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Raises ``ValueError`` when the state has no curriculum table (a run
        without ``curriculum``) or names a prompt beyond this data set."""
        if "curriculum" not in state:
            raise ValueError("the checkpoint has no curriculum state: it was saved by a run without curriculum")
        table = state["curriculum"]
        indices = drawn_indices(table)
        if indices and max(indices) >= self.num_rows:
            raise ValueError(f"curriculum state names prompt {max(indices)} but the data set has {self.num_rows}")
        self.batches_drawn, self.position = int(state["batches_drawn"]), int(table["position"])
        self.rates = {int(i): float(r) for i, r in table["rates"]}
        self.groups = {int(i): int(n) for i, n in table["groups"]}
        self.pending = [int(i) for i in table["pending"]]


def drawn_indices(table: dict[str, Any]) -> list[int]:
    """Every prompt a curriculum run drew, from the ``curriculum`` entry of its ``trainer_state.json``."""
    return [int(i) for i, _ in table["groups"]]


def build_prompt_sampler(args, num_rows: int, accelerator, reward_names: list[str]):
    """The run's prompt sampler: :class:`CurriculumSampler` with ``curriculum: true``, else the fixed-order
    :class:`grpo.data.PromptSampler`. Raises ``ValueError`` (curriculum without a correctness reward)."""
    processes, rank = accelerator.num_processes, accelerator.process_index
    if not args.curriculum:
        return PromptSampler(num_rows, args.prompts_per_rollout, args.seed, processes, rank)
    pass_column(reward_names)
    return CurriculumSampler(
        num_rows,
        args.prompts_per_rollout,
        args.seed,
        args.num_generations,
        min_pass_rate=args.curriculum_min_pass_rate,
        max_pass_rate=args.curriculum_max_pass_rate,
        revisit_prob=args.curriculum_revisit_prob,
        ema=args.curriculum_ema,
        num_processes=processes,
        process_index=rank,
        gather=None if processes == 1 else lambda t: accelerator.gather(t.to(accelerator.device)).cpu(),
    )
