"""Pareto fronts: normalise every objective to minimise, then one numpy function."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Rows of ``values`` (n x k, every column minimised) that no other row dominates.

    Row j dominates row i when it is no worse in every column and better in one. Duplicate
    rows do not dominate each other: both stay on the front.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"expected an (n, k) array, got shape {v.shape}")
    no_worse = (v[:, None, :] <= v[None, :, :]).all(axis=2)  # [j, i]: j no worse than i
    better = (v[:, None, :] < v[None, :, :]).any(axis=2)
    return np.asarray(~(no_worse & better).any(axis=0))


def to_minimise(frame: pd.DataFrame, metrics: Sequence[str], modes: Sequence[str]) -> np.ndarray:
    """The objective columns of ``frame`` as an array to minimise (``max`` columns negated)."""
    cols = [frame[m].to_numpy(dtype=np.float64) * (-1.0 if mode == "max" else 1.0)
            for m, mode in zip(metrics, modes, strict=True)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))


def pareto_front(frame: pd.DataFrame, metrics: Sequence[str], modes: Sequence[str]) -> pd.DataFrame:
    """The non-dominated completed rows of a trials table, sorted by the second objective."""
    done = frame[frame["state"] == "complete"] if "state" in frame else frame
    done = done.dropna(subset=list(metrics))
    if done.empty:
        return done
    front = done[pareto_mask(to_minimise(done, metrics, modes))]
    return front.sort_values(list(metrics[1:2]) or list(metrics)).reset_index(drop=True)


def hypervolume_2d(points: np.ndarray, reference: Sequence[float]) -> float:
    """Area dominated by 2-D ``points`` (both minimised) and bounded by ``reference``.

    Points not strictly better than the reference in both objectives add nothing.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ref = np.asarray(reference, dtype=np.float64)
    p = p[(p < ref).all(axis=1)]
    if not len(p):
        return 0.0
    p = p[pareto_mask(p)]
    p = p[np.argsort(p[:, 0])]
    widths = np.diff(np.append(p[:, 0], ref[0]))
    return float(np.sum(widths * (ref[1] - p[:, 1])))
