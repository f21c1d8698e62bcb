"""The curriculum sampler (grpo/curriculum.py): its choices on a scripted pass-rate history, worked out by hand
from the seeded epoch orders and revisit coins; exact state round trips; several processes agreeing; and, with
the tiny model, its state in the checkpoint and restored on resume."""

import json
import math

import pytest
import torch

from grpo.curriculum import CurriculumSampler, group_pass_rates, revisit_draw
from grpo.data import epoch_order

NAN = math.nan
NAMES = ["accuracy", "format"]


def rewards(*groups):
    """``per_func [B*G, 2]`` with the accuracy column from ``groups`` (lists of G values) and format 0."""
    accuracy = torch.tensor([v for g in groups for v in g], dtype=torch.float32)
    return torch.stack([accuracy, torch.zeros_like(accuracy)], dim=1)


def sampler(num_rows=6, revisit_prob=0.0, **kwargs):
    return CurriculumSampler(num_rows, 2, 0, 4, revisit_prob=revisit_prob, ema=0.5, **kwargs)


def scripted_history(s):
    """Draws 1-4 of the scripted run; returns the draws. Epoch orders (seed 0): [2, 5, 3, 0, 1, 4] at positions
    0-5, [1, 5, 2, 0, 3, 4] at 6-11, [0, 3, 1, 2, 4, 5] at 12-17."""
    draws = [s.next_indices()]  # positions 0, 1: nothing known yet
    s.observe(rewards([1, 1, 1, 1], [1, 0, 0, 0]), NAMES)  # 2 -> 1.0, 5 -> 0.25
    draws.append(s.next_indices())  # positions 2, 3
    s.observe(rewards([0, 0, 0, 0], [1, 1, 0, 0]), NAMES)  # 3 -> 0.0, 0 -> 0.5
    draws.append(s.next_indices())  # positions 4, 5
    s.observe(rewards([NAN] * 4, [1, 1, 1, NAN]), NAMES)  # 1: nothing verifiable; 4 -> 3 of 3 = 1.0
    draws.append(s.next_indices())  # positions 6 (1: unknown), 7 (5: 0.25), both in band
    s.observe(rewards([1, 0, 0, 0], [1, 1, 1, 1]), NAMES)  # 1 -> 0.25; 5 -> 0.25 + 0.5 * (1 - 0.25) = 0.625
    return draws


def test_epoch_orders_and_coins_the_hand_computation_assumes():
    assert [epoch_order(6, 0, e) for e in range(3)] == [[2, 5, 3, 0, 1, 4], [1, 5, 2, 0, 3, 4], [0, 3, 1, 2, 4, 5]]
    assert revisit_draw(0, 8) < 0.3 <= revisit_draw(0, 10) and revisit_draw(0, 11) < 0.3
    assert revisit_draw(0, 8) == revisit_draw(0, 8) != revisit_draw(1, 8)  # a function of (seed, position)


def test_choices_on_a_scripted_history_skip_all_solved_and_all_failed():
    s = sampler()
    assert scripted_history(s) == [[2, 5], [3, 0], [1, 4], [1, 5]]
    assert s.rates == {2: 1.0, 5: 0.625, 3: 0.0, 0: 0.5, 4: 1.0, 1: 0.25}
    assert s.groups == {2: 1, 5: 2, 3: 1, 0: 1, 1: 1, 4: 1}
    s.metrics()
    # positions 8 (2: 1.0, skipped), 9 (0: 0.5, drawn), 10 (3: 0.0, skipped), 11 (4: 1.0, skipped),
    # 12 (0 again: already in this batch), 13 (3, skipped), 14 (1: 0.25, drawn)
    assert s.next_indices() == [0, 1] and s.position == 15
    m = s.metrics()
    assert (m["curriculum/skipped"], m["curriculum/revisited"], m["curriculum/forced"]) == (4, 0, 0)
    assert m["curriculum/drawn_pass_rate"] == pytest.approx((0.5 + 0.25) / 2)
    assert (m["curriculum/too_easy_prompts"], m["curriculum/too_hard_prompts"], m["curriculum/active_prompts"]) == (
        2,
        1,
        3,
    )
    s.observe(rewards([0, 0, 0, 0], [1, 1, 1, 1]), NAMES)
    assert s.rates[0] == 0.25 and s.rates[1] == 0.625  # 0.5 + 0.5 * (0 - 0.5); 0.25 + 0.5 * (1 - 0.25)


def test_revisit_coin_draws_skipped_prompts_again():
    s = sampler(revisit_prob=0.3)
    scripted_history(s)  # no prompt out of band was met: the same draws
    s.metrics()
    assert s.next_indices() == [2, 0]  # position 8: 2 is too easy but its coin 0.217 < 0.3; position 9: 0
    s.observe(rewards([1, 1, 1, 1], [0, 0, 0, 0]), NAMES)  # 2 stays 1.0, 0 -> 0.25
    # position 10: 3 (0.0), coin 0.318 >= 0.3: skipped; 11: 4 (1.0), coin 0.279 < 0.3: revisited; 12: 0 (0.25)
    assert s.next_indices() == [4, 0]
    m = s.metrics()
    assert (m["curriculum/skipped"], m["curriculum/revisited"]) == (1, 2)


def test_a_data_set_out_of_band_is_filled_in_stream_order():
    s = CurriculumSampler(4, 2, 0, 4, revisit_prob=0.0)
    s.rates = {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0}
    # positions 0-3 (all of epoch 0) skipped; the 5th candidate scanned exceeds the data set: forced
    assert s.next_indices() == epoch_order(4, 0, 1)[:2]
    m = s.metrics()
    assert (m["curriculum/skipped"], m["curriculum/forced"], m["curriculum/active_prompts"]) == (4, 2, 0)


def test_pass_rates_and_errors():
    per_func = rewards([1, 0, 1, NAN], [NAN] * 4, [0.5, 1, 2, 0])  # >= 1 passes; partial credit does not
    rates = group_pass_rates(per_func, NAMES, 4)
    assert rates[0] == pytest.approx(2 / 3) and rates[1].isnan() and rates[2] == 0.5
    with pytest.raises(ValueError, match="correctness reward"):
        group_pass_rates(per_func, ["format", "length"], 4)
    s = sampler()
    s.next_indices()
    with pytest.raises(RuntimeError, match="rewards of 1 groups for a draw of 2"):
        s.observe(rewards([1, 1, 1, 1]), NAMES)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        CurriculumSampler(3, 2, 0, 4, num_processes=2)


def test_state_round_trip_gives_the_same_future_draws():
    a = sampler(revisit_prob=0.3)
    scripted_history(a)
    a.next_indices()  # a draw awaiting its rewards is part of the state
    saved = json.loads(json.dumps(a.state_dict()))
    b = sampler(revisit_prob=0.3)
    b.load_state_dict(saved)
    assert b.state_dict() == a.state_dict()
    for step in range(12):  # several epochs of draws and updates, the same on both
        groups = [[float((step + i) % 3 == 0)] * 2 + [1.0, 0.0] for i in range(2)]
        a.observe(rewards(*groups), NAMES)
        b.observe(rewards(*groups), NAMES)
        assert a.next_indices() == b.next_indices()
    assert a.state_dict() == b.state_dict()
    with pytest.raises(ValueError, match="without curriculum"):
        b.load_state_dict({"batches_drawn": 3})
    with pytest.raises(ValueError, match="data set has 4"):
        sampler(num_rows=4).load_state_dict(saved)


def test_processes_share_one_table_and_draw_disjoint_slices():
    """Two processes (B = 1 each) against one process drawing the same global batch of 2."""
    global_rewards = {}
    procs = [
        CurriculumSampler(6, 1, 0, 4, num_processes=2, process_index=k, gather=lambda t: global_rewards["all"])
        for k in range(2)
    ]
    single = CurriculumSampler(6, 2, 0, 4)
    for _ in range(8):
        mine = [p.next_indices() for p in procs]
        together = single.next_indices()
        assert mine[0] + mine[1] == together
        groups = [[1.0, 1.0, 1.0, 1.0] if i % 2 else [0.0, 1.0, 0.0, 0.0] for i in together]
        global_rewards["all"] = group_pass_rates(rewards(*groups), NAMES, 4)  # what accelerate's gather returns
        for k, p in enumerate(procs):
            p.observe(rewards(groups[k]), NAMES)
        single.observe(rewards(*groups), NAMES)
    assert procs[0].state_dict() == procs[1].state_dict() == single.state_dict()
    assert single.metrics()["curriculum/skipped"] > 0  # the odd prompts became too easy and were skipped


def test_running_pass_rate_is_an_ema_with_the_set_weight():
    s = CurriculumSampler(2, 2, 0, 4, ema=0.25, revisit_prob=1.0)  # every out-of-band prompt revisited
    a, b = s.next_indices()
    s.observe(rewards([0, 0, 0, 0], [1, 1, 1, 1]), NAMES)  # the first group sets the rate
    assert (s.rates[a], s.rates[b]) == (0.0, 1.0)
    second = s.next_indices()
    assert sorted(second) == sorted([a, b]) and s.metrics()["curriculum/revisited"] == 2
    s.observe(rewards(*[[1, 1, 1, 1] if i == a else [0, 0, 0, 0] for i in second]), NAMES)
    assert (s.rates[a], s.rates[b]) == (0.25, 0.75)  # 0 + 0.25 * (1 - 0); 1 + 0.25 * (0 - 1)


# --- in the trainer (tiny model) ------------------------------------------------------------------------------


def accuracy(completions, solution, **kwargs):
    """A stand-in correctness reward: prompts with an even answer are always solved (too easy after one group);
    in the others every second completion passes (pass rate 0.5: in band)."""
    return [1.0 if int(s) % 2 == 0 else float(i % 2) for i, s in enumerate(solution)]


def curriculum_trainer(folder, *flags):
    """The tiny recipe on 4 prompts (2 a rollout) with :func:`accuracy`; returns it and the list it appends each
    rollout's drawn prompt indices to."""
    from tests.test_trainer import make_trainer

    trainer = make_trainer(folder, "--curriculum", "true", "--max_train_samples", "4", *flags, reward=False)
    trainer.reward_funcs, trainer.reward_names, trainer.reward_weights = [accuracy], ["accuracy"], torch.ones(1)
    drawn = []
    original = trainer.next_prompts
    trainer.next_prompts = lambda: (rows := original(), drawn.append([trainer.dataset.rows.index(r) for r in rows]))[0]
    return trainer, drawn


def test_trainer_saves_and_restores_the_curriculum_state(tmp_path):
    from grpo.checkpoint import read_trainer_state
    from grpo.data import trained_problems
    from tests.test_trainer import read_metrics

    flags = ["--max_steps", "3", "--save_steps", "1", "--save_total_limit", "5", "--curriculum_revisit_prob", "0"]
    full, drawn = curriculum_trainer(tmp_path / "full", *flags)
    full.train()
    rows = full.dataset.rows
    # epoch 1 is steps 1-2; in step 3 the even-answer prompts (too easy after one group) are skipped
    evens = [i for i, r in enumerate(rows) if int(r["solution"]) % 2 == 0]
    assert evens and not set(drawn[2]) & set(evens), (drawn, evens)
    records = read_metrics(tmp_path / "full")
    assert [r["curriculum/seen_prompts"] for r in records] == [2, 4, 4]
    assert records[2]["curriculum/too_easy_prompts"] >= len(evens) and records[2]["curriculum/skipped"] >= 1
    saved = read_trainer_state(tmp_path / "full" / "checkpoint-2")
    assert sorted(i for i, _ in saved["curriculum"]["groups"]) == sorted(drawn[0] + drawn[1]) == [0, 1, 2, 3]
    assert trained_problems(str(tmp_path / "full")) == {r["problem"] for r in rows}

    resumed, drawn_after = curriculum_trainer(
        tmp_path / "part", *flags, "--resume_from_checkpoint", str(tmp_path / "full" / "checkpoint-2")
    )
    assert resumed.prompts.state_dict() == {"batches_drawn": 2, "curriculum": saved["curriculum"]}
    resumed.train()
    assert drawn_after == drawn[2:]  # the same prompts after the resume point
    assert resumed.prompts.state_dict() == full.prompts.state_dict()
