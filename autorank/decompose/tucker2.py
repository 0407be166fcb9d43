"""``tucker2``: Tucker-2 decomposition of a conv kernel over its channel modes.

Kim et al., "Compression of Deep Convolutional Neural Networks for Fast and Low Power Mobile
Applications", ICLR 2016.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
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


def _leading_vectors(unfolding: torch.Tensor) -> torch.Tensor:
    """Left singular vectors of a wide unfolding, by descending singular value.

    Taken as eigenvectors of the (rows x rows) Gram matrix: the unfoldings are rows x rows·k²
    wide, where this is an order of magnitude faster than an SVD and exact at full rank (the
    basis is complete and orthonormal either way).
    """
    rows, cols = unfolding.shape
    if rows > cols:
        u, _, _ = torch.linalg.svd(unfolding, full_matrices=False)
        return u
    _, vectors = torch.linalg.eigh(unfolding @ unfolding.T)
    return vectors.flip(1)


@register_method
class Tucker2(Method):
    """1x1 (S -> r_in), kh x kw core (r_in -> r_out), 1x1 (r_out -> T). Rank tuple ``(r_in, r_out)``.

    The core carries the layer's stride, padding and dilation; the last 1x1 carries the bias.
    Factors by HOSVD (leading left singular vectors of the in- and out-channel unfoldings),
    which is nested: the factors at a rank are slices of the full ones, so one HOSVD per layer
    serves every plan. ``hooi_iters > 0`` refines them by HOOI (tensorly ``partial_tucker``),
    per (layer, rank).
    """

    name = "tucker2"
    rank_names = ("r_in", "r_out")
    seed_unfoldings = ((1,), (0,))

    def __init__(self, *, hooi_iters: int = 0) -> None:
        super().__init__()
        self.hooi_iters = hooi_iters

    def max_rank(self, layer: nn.Module) -> Rank:
        t, s, kh, kw = kernel_shape(layer)
        return (min(s, t * kh * kw), min(t, s * kh * kw))

    def num_params(self, layer: nn.Module, rank: Sequence[int]) -> int:
        r_in, r_out = rank
        t, s, kh, kw = kernel_shape(layer)
        return s * r_in + r_in * r_out * kh * kw + r_out * t + bias_params(layer)

    def hosvd(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full HOSVD ``(u_in (S x K_in), core (K_out, K_in, kh, kw), u_out (T x K_out))``, cached."""

        def compute() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            weight = work_weight(layer)
            t, s = weight.shape[:2]
            u_out = _leading_vectors(weight.reshape(t, -1))
            u_in = _leading_vectors(weight.transpose(0, 1).reshape(s, -1))
            # Two matrix products (projection on u_out, then on u_in), not one 3-operand einsum,
            # whose contraction order torch does not optimise.
            t_, s_, kh, kw = weight.shape
            proj = (u_out.T @ weight.reshape(t_, -1)).reshape(-1, s_, kh, kw)
            core = (proj.permute(0, 2, 3, 1) @ u_in).permute(0, 3, 1, 2).contiguous()
            return u_in, core, u_out

        return self.cache.get(("hosvd", fingerprint(weight_of(layer))), compute)

    def _hooi(self, layer: nn.Module, rank: Rank) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import tensorly as tl
        from tensorly.decomposition import partial_tucker

        def compute() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            r_in, r_out = rank
            weight = work_weight(layer).numpy()
            with tl.backend_context("numpy"):
                (core, (u_out, u_in)), _ = partial_tucker(
                    weight, rank=[r_out, r_in], modes=[0, 1], init="svd",
                    n_iter_max=self.hooi_iters, tol=1e-10)
            return torch.from_numpy(u_in), torch.from_numpy(core), torch.from_numpy(u_out)

        key = ("hooi", self.hooi_iters, fingerprint(weight_of(layer)), rank)
        return self.cache.get(key, compute)

    def _factorize(self, layer: nn.Module, rank: Rank) -> nn.Module:
        r_in, r_out = rank
        geo = ConvGeometry.of(layer)
        if self.hooi_iters > 0:
            u_in, core, u_out = self._hooi(layer, rank)
        else:
            u_in, core, u_out = self.hosvd(layer)
        return nn.Sequential(
            conv_like(layer, geo.in_channels, r_in, (1, 1), u_in[:, :r_in].T),
            conv_like(layer, r_in, r_out, geo.kernel, core[:r_out, :r_in],
                      window=geo.window("hw")),
            conv_like(layer, r_out, geo.out_channels, (1, 1), u_out[:, :r_out],
                      bias=layer_bias(layer)),
        )
