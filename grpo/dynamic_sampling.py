"""DAPO dynamic sampling (Yu et al. 2025, "DAPO", sec. 3.2 and Algorithm 1).

Groups whose rewards are all equal have zero advantages and carry no gradient
(:func:`grpo.algo.advantages.informative_groups`). With ``dynamic_sampling``, further rounds of B prompts are
sampled until B informative groups are collected or ``max_generation_rounds`` is reached; a batch still short is
topped up with dropped groups (advantage 0), and the shortfall is counted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from grpo.algo.advantages import informative_groups, select_groups
from grpo.types import ScoredRollout, concat_rollouts, select_rollout


def sample_informative(
    sample_round: Callable[[], ScoredRollout],
    num_generations: int,
    max_rounds: int,
    pad_id: int,
    any_process: Callable[[bool], bool] = bool,
) -> ScoredRollout:
    """Sample rounds of B prompts (``sample_round``) until B informative groups are found or ``max_rounds``.

    Args:
        sample_round: samples and scores one round of B prompts (G completions each).
        num_generations: G.  max_rounds: at most this many rounds.  pad_id: pads rollouts of different widths.
        any_process: ``any_process(short)`` is True when ``short`` holds on any process (a collective under
            several processes, so that all sample the same number of rounds and their prompt positions stay
            equal; :func:`grpo.distributed.any_process`). Default: this process alone.
    Returns:
        B groups, informative ones first (in sampling order), with ``sampling_stats``
        ``dynamic_sampling/{rounds,dropped_groups,filled_groups}``.
    """
    rounds = [sample_round()]
    wanted = len(rounds[0].rows)
    while len(rounds) < max_rounds and any_process(bool(_informative(rounds, num_generations).sum() < wanted)):
        rounds.append(sample_round())
    return keep_informative(rounds, wanted, num_generations, pad_id)


def _informative(rounds: list[ScoredRollout], num_generations: int) -> torch.Tensor:
    return torch.cat([informative_groups(r.rewards, num_generations) for r in rounds])  # [groups sampled]


def keep_informative(rounds: list[ScoredRollout], wanted: int, num_generations: int, pad_id: int) -> ScoredRollout:
    """The first ``wanted`` groups of ``rounds``, informative first, then dropped ones to fill the batch.

    Returns a :class:`ScoredRollout` of ``wanted`` groups whose ``sampling_stats`` counts the rounds, the
    dropped (uninformative) groups and the groups filled in with dropped ones.
    """
    g = num_generations
    informative = _informative(rounds, g)  # [groups sampled]
    kept = select_groups(informative, g, wanted)  # [K*G]
    filled = select_groups(~informative, g, wanted - len(kept) // g)  # [(wanted - K)*G]
    seq = torch.cat([kept, filled])  # [wanted*G] rows of the chosen groups
    rows = [row for r in rounds for row in r.rows]
    rollout = concat_rollouts([r.rollout for r in rounds], pad_id)
    per_func, rewards = torch.cat([r.per_func for r in rounds]), torch.cat([r.rewards for r in rounds])
    stats = {
        "dynamic_sampling/rounds": len(rounds),
        "dynamic_sampling/dropped_groups": int((~informative).sum()),
        "dynamic_sampling/filled_groups": len(filled) // g,
    }
    return ScoredRollout(
        [rows[i] for i in (seq[::g] // g).tolist()], select_rollout(rollout, seq), per_func[seq], rewards[seq], stats
    )
