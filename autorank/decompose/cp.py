"""``cp`` and ``cp3``: CP (canonical polyadic) decompositions of a conv kernel.

``cp``: Lebedev et al., "Speeding-up Convolutional Neural Networks Using Fine-tuned
CP-Decomposition", ICLR 2015. ``cp3`` (spatial modes merged into one) as in MUSCO
(Gusak et al., "Automated Multi-Stage Compression of Neural Networks", ICCVW 2019).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import DegenerateDecompositionError
from ._base import (
    ConvGeometry,
    Method,
    Rank,
    bias_params,
    conv_like,
    fingerprint,
    kernel_shape,
    layer_bias,
    weight_of,
    work_weight,
)
from ._registry import register_method

# A CP fit whose relative error exceeds 1 is worse than the zero tensor.
MAX_RELATIVE_ERROR = 1.0
# Components far larger than the kernel itself only cancel each other: the classic CP
# degeneracy (Lebedev et al. 2015, section 3) that makes fine-tuning diverge.
MAX_COMPONENT_NORM_RATIO = 100.0


def cp_als(
    tensor: np.ndarray, rank: int, *, n_iter_max: int = 1000, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """CP-ALS (tensorly ``parafac``, SVD init), checked for degeneracy.

    Returns:
        ``(weights, factors)``: ``tensor ≈ sum_r weights[r] * outer(f[:, r] for f in factors)``,
        factor columns of unit norm.

    Raises:
        DegenerateDecompositionError: non-finite factors, a component norm over
            ``MAX_COMPONENT_NORM_RATIO`` times the tensor's, or a relative error over
            ``MAX_RELATIVE_ERROR``.
    """
    import tensorly as tl
    from tensorly.decomposition import parafac

    with tl.backend_context("numpy"), warnings.catch_warnings():
        # SVD init at a rank above a mode's size pads randomly (seeded); tensorly warns each time
        warnings.filterwarnings("ignore", message=".*n_eigenvecs.*", category=UserWarning)
        try:
            cp = parafac(tensor, rank, init="svd", n_iter_max=n_iter_max, tol=1e-10,
                         normalize_factors=True, random_state=seed)
        except np.linalg.LinAlgError as err:
            raise DegenerateDecompositionError(f"CP-ALS at rank {rank} broke down: {err}") from err
        weights, factors = cp
        recon = tl.cp_to_tensor(cp)
    norm = float(np.linalg.norm(tensor)) or 1.0
    if not (np.all(np.isfinite(weights)) and all(np.all(np.isfinite(f)) for f in factors)):
        raise DegenerateDecompositionError(f"CP at rank {rank} produced non-finite factors")
    ratio = float(np.max(np.abs(weights))) / norm
    if ratio > MAX_COMPONENT_NORM_RATIO:
        raise DegenerateDecompositionError(
            f"CP at rank {rank} is degenerate: a component is {ratio:.0f}x the kernel's norm "
            f"(bound {MAX_COMPONENT_NORM_RATIO:.0f}x)")
    rel_err = float(np.linalg.norm(tensor - recon)) / norm
    if rel_err > MAX_RELATIVE_ERROR:
        raise DegenerateDecompositionError(
            f"CP at rank {rank} fits the kernel with relative error {rel_err:.2f} "
            f"(bound {MAX_RELATIVE_ERROR})")
    return np.asarray(weights), [np.asarray(f) for f in factors]


def _balanced(weights: np.ndarray, factors: list[np.ndarray]) -> list[torch.Tensor]:
    """Spread each component's weight evenly over its factors (sign on the first)."""
    scale = np.abs(weights) ** (1.0 / len(factors))
    out = [torch.from_numpy(f * scale[None, :]) for f in factors]
    out[0] = out[0] * torch.from_numpy(np.sign(weights) + (weights == 0))[None, :]
    return out


class _CPBase(Method):
    rank_names = ("R",)
    n_iter_max = 1000

    def _modes(self, layer: nn.Module) -> tuple[int, ...]:
        raise NotImplementedError

    def max_rank(self, layer: nn.Module) -> Rank:
        # A tensor's CP rank never exceeds the product of all its dimensions but the largest.
        dims = self._modes(layer)
        return (int(np.prod(dims)) // max(dims),)

    def _factors(self, layer: nn.Module, r: int) -> list[torch.Tensor]:
        def compute() -> list[torch.Tensor]:
            tensor = work_weight(layer).reshape(self._modes(layer)).numpy()
            return _balanced(*cp_als(tensor, r, n_iter_max=self.n_iter_max))

        key = (self.name, fingerprint(weight_of(layer)), r)
        return self.cache.get(key, compute)

    def _assemble(self, layer: nn.Module, r: int, factors: list[torch.Tensor]) -> nn.Module:
        raise NotImplementedError

    def _factorize(self, layer: nn.Module, rank: Rank) -> nn.Module:
        return self._assemble(layer, rank[0], self._factors(layer, rank[0]))

    def skeleton(self, layer: nn.Module, rank: Sequence[int]) -> nn.Module:
        (r,) = self.check_rank(layer, rank)
        return self._assemble(layer, r, [torch.randn(d, r) for d in self._modes(layer)])


@register_method
class CP(_CPBase):
    """1x1 (S -> R), kh x 1 depthwise, 1 x kw depthwise, 1x1 (R -> T, bias). Rank ``(R,)``.

    CP-ALS of the (T, S, kh, kw) kernel; the depthwise factors carry the layer's stride, padding
    and dilation of their own axis.
    """

    name = "cp"

    def _modes(self, layer: nn.Module) -> tuple[int, ...]:
        return tuple(int(d) for d in weight_of(layer).shape)

    def num_params(self, layer: nn.Module, rank: Sequence[int]) -> int:
        (r,) = rank
        t, s, kh, kw = kernel_shape(layer)
        return r * (s + kh + kw + t) + bias_params(layer)

    def _assemble(self, layer: nn.Module, r: int, factors: list[torch.Tensor]) -> nn.Module:
        geo = ConvGeometry.of(layer)
        t, s, kh, kw = kernel_shape(layer)
        f_out, f_in, f_h, f_w = factors
        return nn.Sequential(
            conv_like(layer, s, r, (1, 1), f_in.T),
            conv_like(layer, r, r, (kh, 1), f_h.T, groups=r, window=geo.window("h")),
            conv_like(layer, r, r, (1, kw), f_w.T, groups=r, window=geo.window("w")),
            conv_like(layer, r, t, (1, 1), f_out, bias=layer_bias(layer)),
        )


@register_method
class CP3(_CPBase):
    """1x1 (S -> R), kh x kw depthwise, 1x1 (R -> T, bias). Rank ``(R,)``.

    CP-ALS of the kernel as a (T, S, kh·kw) tensor; the depthwise core carries the layer's
    stride, padding and dilation.
    """

    name = "cp3"

    def _modes(self, layer: nn.Module) -> tuple[int, ...]:
        t, s, kh, kw = kernel_shape(layer)
        return (int(t), int(s), int(kh * kw))

    def num_params(self, layer: nn.Module, rank: Sequence[int]) -> int:
        (r,) = rank
        t, s, kh, kw = kernel_shape(layer)
        return r * (s + kh * kw + t) + bias_params(layer)

    def _assemble(self, layer: nn.Module, r: int, factors: list[torch.Tensor]) -> nn.Module:
        geo = ConvGeometry.of(layer)
        t, s, kh, kw = kernel_shape(layer)
        f_out, f_in, f_hw = factors
        return nn.Sequential(
            conv_like(layer, s, r, (1, 1), f_in.T),
            conv_like(layer, r, r, (kh, kw), f_hw.T, groups=r, window=geo.window("hw")),
            conv_like(layer, r, t, (1, 1), f_out, bias=layer_bias(layer)),
        )
