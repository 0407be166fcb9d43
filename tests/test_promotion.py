"""The promotion rule of the multi-fidelity search, on hand-made results."""

from __future__ import annotations

import numpy as np
import pytest

from autorank.config import Fidelity
from autorank.errors import UserError
from autorank.sweep.promotion import (
    RungResult,
    crowding_distance,
    gain_to_top,
    promotable,
    rank_by_dominance,
)


def test_rungs_grow_by_eta_and_end_at_max_steps() -> None:
    assert Fidelity(100, 1600, 4).rungs == (100, 400, 1600)
    assert Fidelity(100, 1000, 3).rungs == (100, 300, 900, 1000)
    assert Fidelity(50, 50, 3).rungs == (50,)
    assert Fidelity(100, 1600, 4).top == 2
    for bad in ((0, 10, 3), (10, 5, 3), (10, 100, 1)):
        with pytest.raises(UserError, match="fidelity needs"):
            Fidelity(*bad)


def r0(number: int, accuracy: float, params: float) -> RungResult:
    return RungResult(number, 0, accuracy, (params,))


def test_a_dominated_trial_is_not_promoted_a_front_trial_is() -> None:
    # 0 dominates 1 (more accurate and smaller); 2 trades accuracy for size with 0
    results = [r0(0, 0.9, 10), r0(1, 0.8, 20), r0(2, 0.7, 5)]
    assert promotable(results, eta=3, top=2) == [(0, 1)]  # 3 // 3 = 1 slot
    results += [r0(3, 0.6, 30), r0(4, 0.5, 40), r0(5, 0.4, 50)]
    got = promotable(results, eta=3, top=2)  # 6 // 3 = 2 slots: the front {0, 2}
    assert sorted(got) == [(0, 1), (2, 1)]
    assert all(n not in {1, 3, 4, 5} for n, _ in got)


def test_eta_sets_the_share_promoted() -> None:
    results = [r0(i, 0.5 + i / 100, 10.0) for i in range(12)]  # same cost: accuracy decides
    assert promotable(results, eta=4, top=1) == [(11, 1), (10, 1), (9, 1)]
    assert promotable(results, eta=2, top=1) == [(n, 1) for n in (11, 10, 9, 8, 7, 6)]
    assert promotable(results[:3], eta=4, top=1) == []  # no worker waits: nothing to promote yet


def test_no_more_than_one_eta_of_a_rung_goes_on_however_it_fills() -> None:
    # a rung filled in order of rising accuracy: every newcomer enters the top quarter, so
    # ASHA proper would promote 15 of 20; the bound keeps it to floor(n / eta) at every step
    results: list[RungResult] = []
    for i in range(20):
        results.append(r0(i, 0.5 + i / 100, 10.0))
        for number, rung in promotable(results, eta=4, top=1):
            results.append(RungResult(number, rung, 0.9, (10.0,)))
        gone_on = sum(r.rung == 1 for r in results)
        assert gone_on == (i + 1) // 4
    # a trial that enters the top once the slots are used waits until the rung grows
    results = [r0(i, 0.5, 10.0) for i in range(4)] + [RungResult(0, 1, 0.9, (10.0,))]
    results.append(r0(4, 0.99, 10.0))
    assert promotable(results, eta=4, top=1) == []
    results += [r0(i, 0.4, 10.0) for i in range(5, 8)]
    assert promotable(results, eta=4, top=1) == [(4, 1)]


def test_taken_and_done_promotions_are_not_offered_again_and_top_rung_ends() -> None:
    results = [r0(i, 0.5 + i / 100, 10.0) for i in range(6)] + [RungResult(5, 1, 0.9, (10.0,))]
    assert promotable(results, eta=3, top=2, taken=[(4, 1)]) == []
    # at rung 1 one result: 1 // 3 = 0 slots; at the top rung nothing goes further
    top = [RungResult(i, 1, 0.9, (1.0,)) for i in range(3)]
    assert promotable(top, eta=3, top=1) == []


def test_deepest_rung_first_and_idempotent() -> None:
    results = [r0(i, 0.5 + i / 100, 10.0) for i in range(9)]
    results += [RungResult(n, 1, acc, (10.0,)) for n, acc in ((8, 0.95), (7, 0.9), (6, 0.85))]
    first = promotable(results, eta=3, top=2)
    assert first[0] == (8, 2)  # rung 1's best goes on before rung 0's next
    assert first == promotable(list(reversed(results)), eta=3, top=2)  # order of results
    assert first == promotable(results, eta=3, top=2)  # asked twice


def test_gain_to_top_sums_the_largest_measured_gain_of_each_rung_ahead() -> None:
    results = [r0(0, 0.60, 1.0), RungResult(0, 1, 0.78, (1.0,)),  # +0.18
               r0(1, 0.85, 2.0), RungResult(1, 1, 0.83, (2.0,))]  # a loss counts as 0
    assert gain_to_top(results[2:], top=2) == pytest.approx({0: 0.0, 1: 0.0})
    # 1 -> 2 not crossed yet: it takes the largest earlier gain
    assert gain_to_top(results, top=2) == pytest.approx({0: 0.36, 1: 0.18})
    results.append(RungResult(0, 2, 0.88, (1.0,)))  # +0.10 from rung 1 to 2
    assert gain_to_top(results, top=2) == pytest.approx({0: 0.28, 1: 0.10})
    assert gain_to_top([r0(0, 0.5, 1.0)], top=2) == {}  # nothing has gone on: no bound


# rung accuracies (100 / 400 steps) and cost (1 / params ratio, 1 / FLOPs ratio) of eight
# plans of a ResNet-20 search (baseline val 91.76 %, max_drop 0.10)
MEASURED = {0: (0.4228, 0.6084, (0.104, 0.226)), 2: (0.8926, 0.9066, (0.701, 0.696)),
            5: (0.7252, 0.8240, (0.243, 0.242)), 8: (0.8274, 0.8786, (0.326, 0.340)),
            9: (0.7968, 0.8608, (0.323, 0.350)), 16: (0.6832, 0.7872, (0.197, 0.195)),
            39: (0.9008, 0.9068, (0.848, 0.571)), 10: (0.8394, 0.8816, (0.444, 0.747))}


def test_a_plan_no_measured_gain_brings_to_the_floor_is_not_promoted() -> None:
    results = [RungResult(n, rung, acc[rung], cost) for n, (*acc, cost) in MEASURED.items()
               for rung in (0, 1)]
    # without the floor the one-shot seed (trial 0, 20 pp below at 400 steps) takes a slot as
    # the cheapest plan in params
    assert 0 in {n for n, _ in promotable(results, eta=4, top=2)}
    # the largest gain from 100 to 400 steps is its own +18.6 pp: 60.8 + 18.6 < 81.76; trial
    # 16 (78.7 %) can still reach it and is kept, and its slot goes to a feasible plan
    got = promotable(results, eta=4, top=2, floor=0.9176 - 0.10)
    assert len(got) == 2 and 0 not in {n for n, _ in got} and (16, 2) in got
    assert promotable(results, eta=4, top=2, floor=0.0) == promotable(results, eta=4, top=2)
    # a floor nothing can reach leaves the rung's slots empty
    assert promotable(results, eta=4, top=2, floor=1.5) == []


def test_non_finite_accuracy_is_never_promoted() -> None:
    results = [r0(0, float("nan"), 1.0), r0(1, 0.5, 10.0), r0(2, 0.4, 20.0), r0(3, 0.3, 30.0)]
    assert promotable(results, eta=3, top=1) == [(1, 1)]


def test_ranking_fronts_then_crowding() -> None:
    values = np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0], [3.0, 3.0]])
    order = rank_by_dominance(values)
    assert order[-1] == 4  # the only dominated row comes last
    assert set(order[:2]) == {0, 3}  # the ends of the front: infinite crowding distance
    assert np.isinf(crowding_distance(values[:4])[[0, 3]]).all()
