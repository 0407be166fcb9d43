"""Empirical variational Bayesian matrix factorization (EVBMF) rank estimation.

Nakajima, Sugiyama, Babacan and Tomioka, "Global Analytic Solution of Fully-observed
Variational Bayesian Matrix Factorization", JMLR 14 (2013). Written from the paper on singular
values only: the noise variance sigma^2 is the global minimiser of the EVB free energy, and the
rank is the number of singular values above the EVB threshold at that sigma^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

# Points of the global grid over log(sigma^2). The free energy is multi-modal when many singular
# values are near zero (ReLU-dead channels): a single local bounded search, as common ports do,
# can stop in the wrong basin, so the grid finds the global basin and Brent only polishes it.
_GRID_POINTS = 512


@dataclass(frozen=True)
class EVBMFResult:
    """EVBMF estimate: ``rank``, noise variance ``sigma2`` and the singular value ``threshold``."""

    rank: int
    sigma2: float
    threshold: float


def _tau_bar(alpha: float) -> float:
    """The unique zero of Phi(t) + Phi(t / alpha), Phi(z) = log(z + 1) / z - 1/2."""

    def phi(z: float) -> float:
        return float(np.log1p(z) / z - 0.5)

    return float(brentq(lambda t: phi(t) + phi(t / alpha), 1e-6, 1e3, xtol=1e-12))


def _free_energy(sigma2: np.ndarray, sv2: np.ndarray, L: int, M: int, x_bar: float) -> np.ndarray:
    """EVB free energy (up to constants) at each ``sigma2``, the squared singular values given."""
    alpha = L / M
    x = sv2[None, :] / (M * np.atleast_1d(sigma2)[:, None])
    big = x > x_bar
    # Components under the threshold contribute x - log x; those above, the EVB posterior terms.
    d = np.where(big, x - (1 + alpha), 0.0)
    tau = 0.5 * (d + np.sqrt(np.maximum(d * d - 4 * alpha, 0.0)))
    tau = np.where(big, tau, 1.0)
    above = x - tau + np.log((tau + 1) / x) + alpha * np.log(tau / alpha + 1)
    below = x - np.log(x)
    return np.asarray(np.where(big, above, below).sum(axis=1))


def evbmf(singular_values: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> EVBMFResult:
    """EVBMF on the singular values of a matrix of ``shape`` (either orientation).

    Args:
        singular_values: all ``min(shape)`` singular values, any order.
        shape: the matrix's (rows, cols).

    Returns:
        The estimate; ``rank`` is in ``0..min(shape)``.
    """
    L, M = min(shape), max(shape)
    s = np.sort(np.asarray(singular_values, dtype=np.float64).ravel())[::-1]
    if s.size != L:
        raise ValueError(f"expected {L} singular values for a {shape} matrix, got {s.size}")
    sv2 = s * s
    if L == 0 or sv2.sum() <= 0:
        return EVBMFResult(0, 0.0, 0.0)
    alpha = L / M
    tau_bar = _tau_bar(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    # Bounds on the sigma^2 minimiser (Nakajima et al. 2013): no more than ceil(L/(1+alpha)) - 1
    # components can be signal, so the rest bound sigma^2 from below.
    h_bar = max(min(int(np.ceil(L / (1 + alpha))) - 1, L - 1), 0)
    lower = max(sv2[h_bar] / (M * x_bar), float(np.mean(sv2[h_bar:])) / M)
    upper = float(sv2.sum()) / (L * M)
    lower = max(lower, upper * 1e-12)
    if lower >= upper:
        sigma2 = upper
    else:
        grid = np.geomspace(lower, upper, _GRID_POINTS)
        energy = _free_energy(grid, sv2, L, M, x_bar)
        i = int(np.argmin(energy))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        best = minimize_scalar(lambda v: float(_free_energy(v, sv2, L, M, x_bar)[0]),
                               bounds=(lo, hi), method="bounded", options={"xatol": lo * 1e-9})
        sigma2 = float(best.x) if best.fun <= energy[i] else float(grid[i])
    threshold = float(np.sqrt(M * sigma2 * x_bar))
    return EVBMFResult(int(np.sum(s > threshold)), sigma2, threshold)


def singular_values(matrix: torch.Tensor | np.ndarray) -> np.ndarray:
    """Singular values of a 2-D matrix, descending, without singular vectors.

    Computed as square roots of the eigenvalues of the smaller Gram matrix: for the wide
    unfoldings of conv kernels this is about 8x faster than an SVD, and EVBMF needs the small
    values only down to the noise level, far above the Gram matrix's float64 round-off.
    """
    m = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(m.shape)}")
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    eig = torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt()
    return np.asarray(eig.flip(0).numpy())


def evbmf_rank(matrix: torch.Tensor | np.ndarray) -> int:
    """The EVBMF rank of a 2-D matrix (0..min(shape)), from its singular values only."""
    m = torch.as_tensor(matrix)
    if m.ndim != 2:
        raise ValueError(f"evbmf_rank takes a 2-D matrix, got shape {tuple(m.shape)}")
    return evbmf(singular_values(m), (int(m.shape[0]), int(m.shape[1]))).rank
