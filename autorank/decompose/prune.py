"""``prune``: structured channel pruning, a rank choice like the others (the identity restricted
to the kept output channels), cut consistently through Torch-Pruning's dependency graph.

Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017: keep the filters of largest
L1 norm. Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023: the dependency
graph finds every layer coupled to a conv's output channels (its BatchNorm, the next conv's
input channels, depthwise groups, concatenations) so the pruned model still runs.

A layer is pruned alone only when its output channels are its own: a group that also cuts
another conv's or linear's output channels (channels tied across a residual sum) is not
offered, nor is a layer whose outputs no layer consumes (the classifier's classes). The CIFAR
ResNets' option-A shortcut (a strided slice padded with zero channels, in a lambda) is
invisible to the graph, which would tie the stages' different widths together; the same rule
leaves those convs alone, so they are pruned inside their blocks only. A model whose graph
Torch-Pruning cannot trace (ShuffleNet V2's channel shuffle) offers no layer to prune.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._base import (
    Method,
    Rank,
    bias_params,
    conv_like,
    conv_or_linear_reason,
    layer_bias,
    linear_like,
    weight_of,
)
from ._registry import register_method

log = logging.getLogger(__name__)

# l1 / l2: the norm of the layer's own filters (Li et al. 2017); group: the L2 norm of every
# weight the channel's coupled group holds (its filter, BatchNorm, the next layers' inputs), the
# importance of DepGraph (Fang et al. 2023)
IMPORTANCES = ("l1", "l2", "group")


@register_method
class Prune(Method):
    """Keep ``k`` output channels (filters), those of largest L1 norm. Rank tuple: ``(k,)``.

    In :func:`autorank.apply_plan` the layers that consume the channels shrink with it (through
    the dependency graph); :meth:`factorize` on a layer alone returns the layer with ``k``
    filters, for a layer whose consumers are handled elsewhere.
    """

    name = "prune"
    rank_names = ("k",)
    seed_unfoldings = ((0,),)  # EVBMF rank of the (out x in·kh·kw) matrix, like svd's

    def unsupported_reason(self, layer: nn.Module) -> str | None:
        return conv_or_linear_reason(layer, "is pruned with its producer")

    def max_rank(self, layer: nn.Module) -> Rank:
        return (int(weight_of(layer).shape[0]),)

    def num_params(self, layer: nn.Module, rank: Sequence[int]) -> int:
        """The layer's own parameters at ``k`` filters (its consumers shrink too, elsewhere)."""
        (k,) = rank
        weight = weight_of(layer)
        return k * int(weight[0].numel()) + (k if bias_params(layer) else 0)

    def _factorize(self, layer: nn.Module, rank: Rank) -> nn.Module:
        keep = kept_channels(layer, rank[0])
        weight = weight_of(layer).detach()[keep]
        bias = layer_bias(layer)
        bias = None if bias is None else bias[keep]
        if isinstance(layer, nn.Linear):
            return linear_like(layer, weight, bias)
        assert isinstance(layer, nn.Conv2d)
        kernel = (int(layer.kernel_size[0]), int(layer.kernel_size[1]))
        return conv_like(layer, layer.in_channels, len(keep), kernel, weight,
                         bias=bias, window={"stride": layer.stride, "padding": layer.padding,
                                            "dilation": layer.dilation})


def kept_channels(layer: nn.Module, k: int, importance: str = "l1") -> list[int]:
    """The ``k`` output channels of ``layer`` of largest filter norm (``l1`` or ``l2``), in
    their original order (ties: the lower index)."""
    if importance not in IMPORTANCES[:2]:
        raise ValueError(f"unknown filter importance {importance!r}; expected one of "
                         f"{list(IMPORTANCES[:2])} (group: prune_layers)")
    weight = weight_of(layer).detach().flatten(1)
    norms = weight.abs().sum(1) if importance == "l1" else weight.pow(2).sum(1)
    order = sorted(range(len(norms)), key=lambda i: (-float(norms[i]), i))
    return sorted(order[:k])


def _graph(model: nn.Module, input_shape: Sequence[int]) -> Any:
    import torch_pruning as tp

    ref = next(model.parameters())
    example = torch.zeros(tuple(input_shape), device=ref.device, dtype=ref.dtype)
    was_training = model.training
    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    finally:
        model.train(was_training)


def _out_handler(layer: nn.Module) -> Any:
    import torch_pruning as tp

    return tp.prune_linear_out_channels if isinstance(layer, nn.Linear) else tp.prune_conv_out_channels


def _prunes_alone(graph: Any, layer: nn.Module) -> bool:
    """Whether cutting ``layer``'s output channels cuts no other conv's or linear's outputs, and
    some layer consumes them (the model's own outputs, a classifier's classes, stay whole)."""
    try:
        group = graph.get_pruning_group(layer, _out_handler(layer), idxs=[0])
    except Exception as err:  # the graph cannot follow this layer's outputs
        log.debug("no pruning group for %s: %s", type(layer).__name__, err)
        return False
    consumed = False
    for item in group:
        target = item.dep.target.module
        handler = getattr(item.dep.handler, "__name__", "")
        if (target is not layer and isinstance(target, nn.Conv2d | nn.Linear)
                and handler.endswith("out_channels") and getattr(target, "groups", 1) == 1):
            return False
        consumed = consumed or handler.endswith("in_channels")
    return consumed


def prunable_layers(model: nn.Module, input_shape: Sequence[int]) -> set[str]:
    """Dotted names of the layers ``prune`` may take alone in ``model`` (see the module doc)."""
    try:
        graph = _graph(model, input_shape)
    except Exception as err:  # Torch-Pruning raises what its tracer meets
        log.info("%s: no dependency graph (%s: %s), no layer can be pruned",
                 type(model).__name__, type(err).__name__, err)
        return set()
    method = Prune()
    return {name for name, layer in model.named_modules()
            if method.unsupported_reason(layer) is None and _prunes_alone(graph, layer)}


def channel_consumers(model: nn.Module, input_shape: Sequence[int]) -> dict[str, set[str]]:
    """For each layer ``prune`` may take, the convs and linears whose input channels shrink with
    its output channels (a search clips their ranks to the pruned width)."""
    try:
        graph = _graph(model, input_shape)
    except Exception:  # no graph, nothing prunable (see prunable_layers)
        return {}
    names = {module: name for name, module in model.named_modules()}
    method, out = Prune(), {}
    for name, layer in model.named_modules():
        if method.unsupported_reason(layer) is not None or not _prunes_alone(graph, layer):
            continue
        group = graph.get_pruning_group(layer, _out_handler(layer), idxs=[0])
        out[name] = {names[item.dep.target.module] for item in group
                     if getattr(item.dep.handler, "__name__", "").endswith("in_channels")
                     and item.dep.target.module in names}
    return out


def prune_layers(model: nn.Module, keep: Mapping[str, int], input_shape: Sequence[int], *,
                 importance: str = "l1") -> None:
    """Cut ``model`` in place: layer ``name`` keeps ``keep[name]`` output channels (largest
    filter norm), and every layer coupled to them shrinks with it.

    Raises:
        ValueError: a layer that cannot be pruned alone, or a count outside 1..out channels.
    """
    if not keep:
        return
    graph = _graph(model, input_shape)
    method = Prune()
    for name, k in keep.items():
        layer = model.get_submodule(name)
        method.check_rank(layer, (k,))
        if not _prunes_alone(graph, layer):
            raise ValueError(f"layer {name!r}: its output channels are tied to other layers' "
                             "(a residual sum): it cannot be pruned alone")
    if importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; expected one of {list(IMPORTANCES)}")
    for name, k in keep.items():  # the graph follows the modules as they shrink
        layer = model.get_submodule(name)
        width = int(weight_of(layer).shape[0])
        if importance == "group":
            kept = set(_group_kept(graph, layer, k))
        else:
            kept = set(kept_channels(layer, k, importance))
        drop = [i for i in range(width) if i not in kept]
        if drop:
            graph.get_pruning_group(layer, _out_handler(layer), idxs=drop).prune()


def _group_kept(graph: Any, layer: nn.Module, k: int) -> list[int]:
    """The ``k`` channels of largest group L2 norm (Torch-Pruning's GroupMagnitudeImportance)."""
    import torch_pruning as tp

    width = int(weight_of(layer).shape[0])
    group = graph.get_pruning_group(layer, _out_handler(layer), idxs=list(range(width)))
    scores = tp.importance.GroupMagnitudeImportance(p=2)(group)
    order = sorted(range(width), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])
