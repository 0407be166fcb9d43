from __future__ import annotations

import numpy as np
import pandas as pd

from autorank.sweep import hypervolume_2d, pareto_front, pareto_mask


def brute_force_front(v: np.ndarray) -> np.ndarray:
    n = len(v)
    keep = np.ones(n, bool)
    for i in range(n):
        for j in range(n):
            if (v[j] <= v[i]).all() and (v[j] < v[i]).any():
                keep[i] = False
    return keep


def test_pareto_mask_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for k in (2, 3):
        v = rng.integers(0, 6, size=(60, k)).astype(float)  # many ties and duplicates
        np.testing.assert_array_equal(pareto_mask(v), brute_force_front(v))


def test_pareto_front_maximises_accuracy_and_skips_failed() -> None:
    frame = pd.DataFrame({
        "number": [0, 1, 2, 3, 4],
        "state": ["complete", "complete", "complete", "failed", "complete"],
        "val_accuracy": [0.9, 0.8, 0.85, 0.99, 0.7],
        "params": [100, 50, 120, 10, 60],
    })
    front = pareto_front(frame, ["val_accuracy", "params"], ["max", "min"])
    assert list(front["number"]) == [1, 0]  # 2 dominated by 0, 4 by 1, 3 failed


def test_hypervolume_2d() -> None:
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5]])
    # staircase under reference (4, 4): 1*1 + 1*2 + 1*3 = 6
    assert hypervolume_2d(points, (4.0, 4.0)) == 6.0
    assert hypervolume_2d(points, (0.5, 0.5)) == 0.0


def test_busy_seconds_counts_overlaps_once_and_skips_a_pause() -> None:
    from autorank.sweep.table import busy_seconds

    t = "2026-01-01T00:{:02d}:00"
    frame = pd.DataFrame({
        # two trials in parallel (0-4, 1-3, 2-6 overlap: 6 min), a 50-minute pause (a stopped
        # search and its resume), then 56-58; a trial never started is skipped
        "started": [t.format(0), t.format(1), t.format(2), t.format(56), None],
        "completed": [t.format(4), t.format(3), t.format(6), t.format(58), None],
    })
    assert busy_seconds(frame) == 8 * 60
    assert busy_seconds(frame.iloc[[1, 0]]) == 4 * 60  # order of rows does not matter
    assert busy_seconds(frame.iloc[[4]]) == 0.0
