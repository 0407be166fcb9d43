"""``prune``: structured channel pruning, a rank choice like the others (the identity restricted
to the kept output channels), cut consistently through Torch-Pruning's dependency graph.

Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017: keep the filters of largest
L1 norm. Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023: the dependency
graph finds every layer coupled to a conv's output channels (its BatchNorm, the next conv's
input channels, depthwise groups, concatenations) so the pruned model still runs.

A layer is pruned alone only when its output channels are its own, and some layer consumes
them (not the classifier's classes). Channels tied across a residual sum are pruned as a
coupled group (:func:`coupled_groups`): every conv and linear whose outputs the sum ties (in
torchvision's ResNet-18 the stem and each ``layer1.*.conv2``; in a later stage its downsample
conv and each ``conv2``) keeps the same channels, chosen once for the group, and the
dependency graph cuts their BatchNorms, the adds and every consumer with them.

The CIFAR ResNets' option-A shortcut (a strided slice padded with zero channels, in a lambda)
is invisible to the graph: it takes the padding as elementwise and ties every stage's stream,
of 16, 32 and 64 channels, into one group. Such a group is refused (it passes through a pad,
and its members differ in width), so those ResNets prune inside their blocks only (each
block's first conv); no dependency across the shortcut is modelled. A model whose graph
Torch-Pruning cannot trace (ShuffleNet V2's channel shuffle) offers no layer to prune.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    return _top(_filter_norms([layer], importance), k)


def _filter_norms(layers: Iterable[nn.Module], importance: str) -> torch.Tensor:
    """Per output channel, the ``l1`` (or squared ``l2``) norm of the layers' filters, summed."""
    if importance not in IMPORTANCES[:2]:
        raise ValueError(f"unknown filter importance {importance!r}; expected one of "
                         f"{list(IMPORTANCES[:2])} (group: prune_layers)")
    weights = [weight_of(layer).detach().flatten(1) for layer in layers]
    norms = [w.abs().sum(1) if importance == "l1" else w.pow(2).sum(1) for w in weights]
    return torch.stack(norms).sum(0)


def _top(scores: torch.Tensor, k: int) -> list[int]:
    """The indices of the ``k`` largest ``scores``, in order (ties: the lower index)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
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


def _tied_outputs(group: Any) -> list[nn.Module]:
    """The convs and linears (not grouped convs, which follow their inputs) whose output
    channels ``group`` cuts."""
    return [item.dep.target.module for item in group
            if isinstance(item.dep.target.module, nn.Conv2d | nn.Linear)
            and getattr(item.dep.handler, "__name__", "").endswith("out_channels")
            and getattr(item.dep.target.module, "groups", 1) == 1]


def _consumers(group: Any, names: Mapping[nn.Module, str]) -> set[str]:
    """Dotted names of the layers whose input channels ``group`` cuts."""
    return {names[item.dep.target.module] for item in group
            if getattr(item.dep.handler, "__name__", "").endswith("in_channels")
            and item.dep.target.module in names}


def _prunes_alone(graph: Any, layer: nn.Module) -> bool:
    """Whether cutting ``layer``'s output channels cuts no other conv's or linear's outputs, and
    some layer consumes them (the model's own outputs, a classifier's classes, stay whole)."""
    try:
        group = graph.get_pruning_group(layer, _out_handler(layer), idxs=[0])
    except Exception as err:  # the graph cannot follow this layer's outputs
        log.debug("no pruning group for %s: %s", type(layer).__name__, err)
        return False
    if any(target is not layer for target in _tied_outputs(group)):
        return False
    return any(getattr(item.dep.handler, "__name__", "").endswith("in_channels") for item in group)


@dataclass(frozen=True)
class CoupledGroup:
    """Convs and linears whose output channels a residual sum ties: ``prune`` takes every member
    to one width, or none of them.

    Attributes:
        name: ``res:`` and the first member's dotted name (stable across runs).
        members: the tied layers' dotted names, in module order.
        channels: their common number of output channels.
        consumers: the layers whose input channels shrink with the group, in module order.
    """

    name: str
    members: tuple[str, ...]
    channels: int
    consumers: tuple[str, ...]


def _refusal(graph: Any, group: Any, members: Sequence[nn.Module]) -> str | None:
    """Why ``group`` cannot be pruned as one (see the module doc), or None."""
    for item in group:
        for node in (item.dep.source, item.dep.target):
            if "Pad" in type(getattr(node, "grad_fn", None)).__name__:
                return ("it passes through a padding, which the graph takes as elementwise though "
                        "it may add channels (an option-A shortcut)")
    widths = sorted({int(weight_of(m).shape[0]) for m in members})
    if len(widths) > 1:
        return f"it ties layers of {widths} output channels"
    if any(not graph.module2node[m].outputs for m in members):
        return "a member's outputs are the model's"
    return None


def _coupled_groups(graph: Any, model: nn.Module) -> list[CoupledGroup]:
    """:func:`coupled_groups` on a traced ``graph`` of ``model``."""
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    method, seen, out = Prune(), set(), []
    for name, layer in model.named_modules():
        if name in seen or method.unsupported_reason(layer) is not None:
            continue
        try:
            group = graph.get_pruning_group(layer, _out_handler(layer), idxs=[0])
        except Exception:  # the graph cannot follow this layer (see _prunes_alone)
            continue
        tied = [m for m in dict.fromkeys(_tied_outputs(group)) if m in names]
        members = sorted((names[m] for m in tied), key=order.__getitem__)
        seen.update(members)
        if len(members) < 2:
            continue
        if (reason := _refusal(graph, group, tied)) is not None:
            log.info("%s: the channels tied across %s are not pruned: %s",
                     type(model).__name__, ", ".join(members), reason)
            continue
        out.append(CoupledGroup(f"res:{members[0]}", tuple(members), int(weight_of(layer).shape[0]),
                                tuple(sorted(_consumers(group, names), key=order.__getitem__))))
    return out


def coupled_groups(model: nn.Module, input_shape: Sequence[int]) -> list[CoupledGroup]:
    """The groups of layers whose output channels residual sums tie, which ``prune`` takes
    together (see the module doc for those refused), in module order of their first member."""
    try:
        graph = _graph(model, input_shape)
    except Exception:  # no graph, nothing prunable (see prunable_layers)
        return []
    return _coupled_groups(graph, model)


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
    """For each layer ``prune`` may take, alone or with its coupled group, the convs and
    linears whose input channels shrink with its output channels (a search clips their ranks
    to the pruned width)."""
    try:
        graph = _graph(model, input_shape)
    except Exception:  # no graph, nothing prunable (see prunable_layers)
        return {}
    names = {module: name for name, module in model.named_modules()}
    method, out = Prune(), {}
    for name, layer in model.named_modules():
        if method.unsupported_reason(layer) is not None or not _prunes_alone(graph, layer):
            continue
        out[name] = _consumers(graph.get_pruning_group(layer, _out_handler(layer), idxs=[0]), names)
    for group in _coupled_groups(graph, model):
        out.update({member: set(group.consumers) for member in group.members})
    return out


def prune_layers(model: nn.Module, keep: Mapping[str, int], input_shape: Sequence[int], *,
                 importance: str = "l1") -> None:
    """Cut ``model`` in place: layer ``name`` keeps ``keep[name]`` output channels (largest
    filter norm), and every layer coupled to them shrinks with it.

    First each coupled group (:func:`coupled_groups`) is cut once, when ``keep`` names all its
    members with one count: the channels it keeps have the largest norm summed over the
    members' filters (``group``: the group norm). Then each layer pruned alone, in ``keep``'s
    order. Each picks its channels on the model as cut so far.

    Raises:
        ValueError: a count outside 1..out channels; a layer that cannot be pruned alone and
            is in no coupled group; a coupled group some of whose members ``keep`` leaves out or
            names with different counts (the message names the group and its members).
    """
    if not keep:
        return
    graph = _graph(model, input_shape)
    method = Prune()
    for name, k in keep.items():
        method.check_rank(model.get_submodule(name), (k,))
    whole = _whole_groups(keep, _coupled_groups(graph, model))
    grouped = {m for group, _ in whole for m in group.members}
    alone = [name for name in keep if name not in grouped]
    for name in alone:
        if not _prunes_alone(graph, model.get_submodule(name)):
            raise ValueError(f"layer {name!r}: its output channels are tied to other layers' "
                             "(a residual sum): it cannot be pruned alone")
    if importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; expected one of {list(IMPORTANCES)}")
    cuts = [([model.get_submodule(m) for m in g.members], k) for g, k in whole]
    cuts += [([model.get_submodule(name)], keep[name]) for name in alone]
    for layers, k in cuts:  # the graph follows the modules as they shrink
        _cut(graph, layers, k, importance)


def _whole_groups(keep: Mapping[str, int], groups: Sequence[CoupledGroup]
                  ) -> list[tuple[CoupledGroup, int]]:
    """The coupled groups ``keep`` prunes, each with its count.

    Raises:
        ValueError: a group pruned in part or to different counts.
    """
    out = []
    for group in groups:
        named = {m: keep[m] for m in group.members if m in keep}
        if not named:
            continue
        if len(named) < len(group.members) or len(set(named.values())) > 1:
            asked = ", ".join(f"{m} to {k}" for m, k in named.items())
            raise ValueError(
                f"coupled group {group.name!r} ({', '.join(group.members)}): a residual sum ties "
                "their output channels, so they cannot be pruned alone: prune all of them to one "
                f"count, or none (the plan prunes {asked})")
        out.append((group, next(iter(named.values()))))
    return out


def _cut(graph: Any, layers: Sequence[nn.Module], k: int, importance: str) -> None:
    """Keep the ``k`` most important output channels of ``layers`` (tied, or one layer)."""
    if importance == "group":
        kept = set(_group_kept(graph, layers[0], k))
    else:
        kept = set(_top(_filter_norms(layers, importance), k))
    drop = [i for i in range(int(weight_of(layers[0]).shape[0])) if i not in kept]
    if drop:
        graph.get_pruning_group(layers[0], _out_handler(layers[0]), idxs=drop).prune()


def _group_kept(graph: Any, layer: nn.Module, k: int) -> list[int]:
    """The ``k`` channels of largest group L2 norm (Torch-Pruning's GroupMagnitudeImportance)."""
    import torch_pruning as tp

    width = int(weight_of(layer).shape[0])
    group = graph.get_pruning_group(layer, _out_handler(layer), idxs=list(range(width)))
    return _top(tp.importance.GroupMagnitudeImportance(p=2)(group), k)
