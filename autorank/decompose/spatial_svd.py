"""``spatial_svd``: a kh x kw conv as a kh x 1 conv then a 1 x kw conv.

Jaderberg et al., BMVC 2014 (scheme 2); closed-form by SVD as in Tai et al., ICLR 2016.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._base import (
    ConvGeometry,
    Method,
    Rank,
    balanced_svd,
    bias_params,
    conv_like,
    fingerprint,
    kernel_shape,
    layer_bias,
    weight_of,
    work_weight,
)
from ._registry import register_method


@register_method
class SpatialSVD(Method):
    """Truncated SVD of the kernel unfolded as (S·kh) x (kw·T). Rank tuple: ``(r,)``.

    Conv2d(S -> r, kh x 1, height stride/padding/dilation) + Conv2d(r -> T, 1 x kw, width
    stride/padding/dilation, bias).
    """

    name = "spatial_svd"
    rank_names = ("r",)
    seed_unfoldings = ((1, 2),)

    def max_rank(self, layer: nn.Module) -> Rank:
        t, s, kh, kw = kernel_shape(layer)
        return (min(s * kh, kw * t),)

    def num_params(self, layer: nn.Module, rank: Sequence[int]) -> int:
        (r,) = rank
        t, s, kh, kw = kernel_shape(layer)
        return r * (s * kh + kw * t) + bias_params(layer)

    def factors(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Full balanced factors: left (S·kh x K), right (K x kw·T), cached by weight."""
        weight = work_weight(layer)
        t, s, kh, kw = weight.shape
        return self.cache.get(
            ("spatial_svd", fingerprint(weight_of(layer))),
            lambda: balanced_svd(weight.permute(1, 2, 3, 0).reshape(s * kh, kw * t)),
        )

    def _factorize(self, layer: nn.Module, rank: Rank) -> nn.Module:
        (r,) = rank
        geo = ConvGeometry.of(layer)
        t, s, kh, kw = kernel_shape(layer)
        left, right = self.factors(layer)
        vertical = left[:, :r].T.reshape(r, s, kh, 1)
        horizontal = right[:r].reshape(r, kw, t).permute(2, 0, 1).reshape(t, r, 1, kw)
        return nn.Sequential(
            conv_like(layer, s, r, (kh, 1), vertical, window=geo.window("h")),
            conv_like(layer, r, t, (1, kw), horizontal, bias=layer_bias(layer),
                      window=geo.window("w")),
        )
