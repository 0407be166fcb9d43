"""A compressed model made as fast as it is exact to make it: BatchNorm folded into the conv
before it, and adjacent linear factors merged where one layer costs less than two.

Low-rank factors are separate layers with nothing between them (Tucker-2's 1x1 -> kxk -> 1x1,
an SVD's two linears); each layer pays its own memory pass and dispatch, which is why a model
with fewer FLOPs can run slower. :func:`deploy` traces the model with ``torch.fx`` and

1. folds every BatchNorm in eval mode into the conv or linear that feeds it alone
   (``torch.fx.experimental.optimization.fuse``);
2. merges a chain ``A -> B`` of two ungrouped convs (or two linears) where ``A``'s output goes
   only to ``B``, the composition is exact (``B`` is a 1x1 conv of stride 1 without padding,
   or ``A`` is one whose bias is absent), and the merged layer costs fewer multiply-adds
   than the pair at the resolution each runs at.

The result is a ``torch.fx.GraphModule`` computing the same function (checked on a random
input, to float32 round-off) for inference; keep the original for training.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

__all__ = ["DEPLOY_ATOL", "deploy", "merge_factors"]

# Folding and merging reorder float32 sums: logits agree to ~1e-6 relative on the models here.
DEPLOY_ATOL = 1e-4


def _is_plain_conv(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str) and tuple(m.dilation) == (1, 1))


def _like(m: nn.Module) -> dict[str, Any]:
    return {"device": m.weight.device, "dtype": m.weight.dtype}


def _pair(value: Any) -> tuple[int, int]:
    return int(value[0]), int(value[1])


def _pointwise(m: nn.Conv2d) -> bool:
    """A 1x1 conv of stride 1 and no padding: a per-pixel matrix product."""
    return _pair(m.kernel_size) == (1, 1) and _pair(m.stride) == (1, 1) and _pair(m.padding) == (0, 0)


def _merged_conv(a: nn.Conv2d, b: nn.Conv2d) -> nn.Conv2d | None:
    """One conv computing ``b(a(x))``, or None where that is not exact or not cheaper."""
    if _pointwise(b):
        # b(a(x)) = W_b (W_a * x + b_a) + b_b: a's window, W_b W_a, W_b b_a + b_b
        merged = nn.Conv2d(a.in_channels, b.out_channels, _pair(a.kernel_size), stride=_pair(a.stride),
                           padding=_pair(a.padding), bias=a.bias is not None or b.bias is not None,
                           **_like(a))
        wb = b.weight.flatten(1)
        weight = (wb @ a.weight.flatten(1)).reshape(b.out_channels, *a.weight.shape[1:])
        folded = wb @ a.bias if a.bias is not None else torch.zeros(b.out_channels, **_like(b))
        bias: torch.Tensor | None = folded + b.bias if b.bias is not None else folded
        # both run at a's output resolution: compare weights (multiply-adds per pixel)
        separate = a.weight.numel() + b.weight.numel()
    elif _pointwise(a) and a.bias is None:
        # without a's bias the zero padding of b sees zeros either way: exact
        merged = nn.Conv2d(a.in_channels, b.out_channels, _pair(b.kernel_size), stride=_pair(b.stride),
                           padding=_pair(b.padding), bias=b.bias is not None, **_like(a))
        weight = torch.einsum("oikl,ij->ojkl", b.weight, a.weight.flatten(1))
        bias = b.bias
        # a runs at the input resolution, stride(b) times more pixels per axis than b's output
        separate = a.weight.numel() * b.stride[0] * b.stride[1] + b.weight.numel()
    else:
        return None
    if merged.weight.numel() >= separate:
        return None
    with torch.no_grad():
        merged.weight.copy_(weight)
        if merged.bias is not None and bias is not None:
            merged.bias.copy_(bias)
    return merged


def _merged_linear(a: nn.Linear, b: nn.Linear) -> nn.Linear | None:
    merged = nn.Linear(a.in_features, b.out_features, bias=a.bias is not None or b.bias is not None,
                       **_like(a))
    if merged.weight.numel() >= a.weight.numel() + b.weight.numel():
        return None
    with torch.no_grad():
        merged.weight.copy_(b.weight @ a.weight)
        bias = b.weight @ a.bias if a.bias is not None else torch.zeros(b.out_features, **_like(b))
        if merged.bias is not None:
            merged.bias.copy_(bias + (b.bias if b.bias is not None else 0))
    return merged


def _set(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def merge_factors(gm: fx.GraphModule) -> int:
    """Merge adjacent linear factors of ``gm`` in place (see the module's doc); the count merged."""
    merged = 0
    changed = True
    while changed:  # a merge can make the next pair adjacent (1x1 -> kxk -> 1x1)
        changed = False
        modules = dict(gm.named_modules())
        for node in gm.graph.nodes:
            if node.op != "call_module" or len(node.args) != 1:
                continue
            prev = node.args[0]
            if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
                continue
            a, b = modules[prev.target], modules[node.target]
            new: nn.Module | None = None
            if _is_plain_conv(a) and _is_plain_conv(b):
                new = _merged_conv(a, b)
            elif type(a) is nn.Linear and type(b) is nn.Linear:
                new = _merged_linear(a, b)
            if new is None:
                continue
            _set(gm, str(prev.target), new)
            node.replace_all_uses_with(prev)
            gm.graph.erase_node(node)
            merged += 1
            changed = True
            break
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return merged


def deploy(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32), *,
           merge: bool = True) -> fx.GraphModule:
    """An inference copy of ``model``: BatchNorm folded, factors merged (see the module's doc),
    checked against ``model`` on a random input of ``input_shape``.

    Raises:
        RuntimeError: the deployed copy differs from ``model`` by more than :data:`DEPLOY_ATOL`
            (relative to the output's scale), which would be a bug.
    """
    source = copy.deepcopy(model).eval()
    gm = fuse(source)
    assert isinstance(gm, fx.GraphModule)
    if merge:
        merge_factors(gm)
    gm.eval()
    ref = next(iter(model.parameters()))
    x = torch.randn(tuple(input_shape), device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        want, got = source(x), gm(x)
    scale = float(want.abs().max()) or 1.0
    diff = float((want - got).abs().max())
    if diff > DEPLOY_ATOL * scale:
        raise RuntimeError(f"deployed model differs from the original by {diff:.3g} "
                           f"(allowed {DEPLOY_ATOL * scale:.3g})")
    return gm
