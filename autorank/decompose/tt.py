"""``tt``: tensor-train decomposition of a conv kernel over the modes (S, kh, kw, T).

TT-SVD of Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 2011 (tensorly
``tensor_train``); used for convolutions with ADMM training by Yin et al., CVPR 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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


def tt_cores(kernel: torch.Tensor, rank: Rank) -> list[torch.Tensor]:
    """TT-SVD cores of a (T, S, kh, kw) kernel over modes (S, kh, kw, T), padded to ``rank``.

    TT-SVD stops a bond at the rank the unfolding actually has; the cores are zero-padded to
    the requested ``(r1, r2, r3)`` so that the module's size always matches ``num_params``.
    """
    import tensorly as tl
    from tensorly.decomposition import tensor_train

    r1, r2, r3 = rank
    tensor = kernel.permute(1, 2, 3, 0).contiguous().numpy()
    with tl.backend_context("numpy"):
        cores = tensor_train(tensor, rank=[1, r1, r2, r3, 1]).factors
    bonds = (1, r1, r2, r3, 1)
    padded = []
    for i, core in enumerate(cores):
        c = torch.from_numpy(core)
        pad_left, pad_right = bonds[i] - c.shape[0], bonds[i + 1] - c.shape[2]
        padded.append(F.pad(c, (0, pad_right, 0, 0, 0, pad_left)))
    return padded


@register_method
class TensorTrain(Method):
    """1x1 (S -> r1), kh x 1 (r1 -> r2), 1 x kw (r2 -> r3), 1x1 (r3 -> T, bias). Rank ``(r1, r2, r3)``.

    The kh x 1 and 1 x kw factors carry the layer's stride, padding and dilation of their axis.
    """

    name = "tt"
    rank_names = ("r1", "r2", "r3")
    seed_unfoldings = ((1,), (1, 2), (0,))

    def max_rank(self, layer: nn.Module) -> Rank:
        t, s, kh, kw = kernel_shape(layer)
        return (min(s, kh * kw * t), min(s * kh, kw * t), min(s * kh * kw, t))

    def num_params(self, layer: nn.Module, rank: Sequence[int]) -> int:
        r1, r2, r3 = rank
        t, s, kh, kw = kernel_shape(layer)
        return s * r1 + r1 * kh * r2 + r2 * kw * r3 + r3 * t + bias_params(layer)

    def cores(self, layer: nn.Module, rank: Rank) -> list[torch.Tensor]:
        """TT cores of the layer at ``rank``, cached per (weight, rank)."""
        key = ("tt", fingerprint(weight_of(layer)), rank)
        return self.cache.get(key, lambda: tt_cores(work_weight(layer), rank))

    def _factorize(self, layer: nn.Module, rank: Rank) -> nn.Module:
        return self._assemble(layer, rank, self.cores(layer, rank))

    def skeleton(self, layer: nn.Module, rank: Sequence[int]) -> nn.Module:
        r1, r2, r3 = self.check_rank(layer, rank)
        t, s, kh, kw = kernel_shape(layer)
        shapes = ((1, s, r1), (r1, kh, r2), (r2, kw, r3), (r3, t, 1))
        return self._assemble(layer, (r1, r2, r3), [torch.randn(shape) for shape in shapes])

    def _assemble(self, layer: nn.Module, rank: Rank, cores: list[torch.Tensor]) -> nn.Module:
        r1, r2, r3 = rank
        geo = ConvGeometry.of(layer)
        t, s, kh, kw = kernel_shape(layer)
        g1, g2, g3, g4 = cores
        return nn.Sequential(
            conv_like(layer, s, r1, (1, 1), g1[0].T),
            conv_like(layer, r1, r2, (kh, 1), g2.permute(2, 0, 1), window=geo.window("h")),
            conv_like(layer, r2, r3, (1, kw), g3.permute(2, 0, 1), window=geo.window("w")),
            conv_like(layer, r3, t, (1, 1), g4[:, :, 0].T, bias=layer_bias(layer)),
        )
