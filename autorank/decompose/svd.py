"""``svd``: channel SVD of a conv or a linear layer (Zhang et al., TPAMI 2015)."""

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
    conv_or_linear_reason,
    fingerprint,
    layer_bias,
    linear_like,
    weight_of,
    work_weight,
)
from ._registry import register_method


@register_method
class ChannelSVD(Method):
    """Truncated SVD of the weight as a (out x in·kh·kw) matrix. Rank tuple: ``(r,)``.

    Linear -> Linear(in, r, no bias) + Linear(r, out, bias).
    kh x kw Conv2d -> Conv2d(S -> r, kh x kw, the layer's stride/padding/dilation) +
    1x1 Conv2d(r -> T, bias).
    """

    name = "svd"
    rank_names = ("r",)
    seed_unfoldings = ((0,),)

    def unsupported_reason(self, layer: nn.Module) -> str | None:
        return conv_or_linear_reason(layer)

    @staticmethod
    def _matrix_shape(layer: nn.Module) -> tuple[int, int]:
        weight = weight_of(layer)
        return int(weight.shape[0]), int(weight[0].numel())

    def max_rank(self, layer: nn.Module) -> Rank:
        return (min(self._matrix_shape(layer)),)

    def num_params(self, layer: nn.Module, rank: Sequence[int]) -> int:
        (r,) = rank
        rows, cols = self._matrix_shape(layer)
        return r * (rows + cols) + bias_params(layer)

    def factors(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Full balanced SVD factors (left: out x K, right: K x in·kh·kw), cached by weight."""
        weight = work_weight(layer)
        return self.cache.get(
            ("svd", fingerprint(weight_of(layer))),
            lambda: balanced_svd(weight.reshape(weight.shape[0], -1)),
        )

    def _factorize(self, layer: nn.Module, rank: Rank) -> nn.Module:
        (r,) = rank
        left, right = self.factors(layer)
        left, right = left[:, :r], right[:r]
        if isinstance(layer, nn.Linear):
            return nn.Sequential(linear_like(layer, right, None),
                                 linear_like(layer, left, layer_bias(layer)))
        assert isinstance(layer, nn.Conv2d)
        geo = ConvGeometry.of(layer)
        return nn.Sequential(
            conv_like(layer, geo.in_channels, r, geo.kernel, right, window=geo.window("hw")),
            conv_like(layer, r, geo.out_channels, (1, 1), left, bias=layer_bias(layer)),
        )
