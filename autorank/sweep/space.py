"""The search space over one model: which layers, which methods, which ranks, as an Optuna
define-by-run function (the preset it follows is :class:`autorank.config.SpaceConfig`).

Structure the sampler can learn with ~50 trials: one global strength ``w`` (MUSCO's weakening
factor, Gusak et al. 2019: rank = R - w (R - r_vbmf), so w = 1 is the EVBMF rank of Kim et al.
2016 and w = 0 the rank at which the factorization costs as much as the dense layer), plus a
method and a log2 offset of the rank around that, per layer or, with ``groups: N``, per
contiguous depth group of layers (a handful of parameters instead of two per layer: a budget of
~50 trials can learn that, say, the last stage takes the compression and the first is kept).
Parameter names are stable across trials: ``w``, ``method.<key>``, ``scale.<key>`` where the
key is the layer's dotted name, or ``g0``, ``g1``, ... for groups.

With ``prune`` among the methods, each coupled group (layers whose output channels a residual
sum ties, :func:`autorank.decompose.coupled_groups`, named ``res:<first member>``) is one more
key, ``keep`` or ``prune``: pruned, every member keeps the same ``k`` channels (``prune``
alone for a member whose own key is ``keep`` or that is not searched, such as the stem;
before its factorization otherwise, whose ranks are clipped to the narrower layer). A group
is offered unless one of its members matches ``exclude``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._inventory import eligible
from ..config import SpaceConfig
from ..decompose import CoupledGroup, channel_consumers, coupled_groups, get_method
from ..errors import UserError
from ..rank import musco_weaken, reference_rank, seed_rank
from ..types import LayerChoice, LayerInfo, Plan


@dataclass(frozen=True)
class LayerSpace:
    """One searchable layer: its methods and, per method, the EVBMF seed and MUSCO's reference
    rank R (the rank at which the factorization costs as much as the dense layer)."""

    name: str
    methods: tuple[str, ...]
    seed: dict[str, tuple[int, ...]]
    reference: dict[str, tuple[int, ...]]
    default_method: str
    key: str = ""  # whose ``method.``/``scale.`` parameters it takes: itself, or its group
    weight_shape: tuple[int, ...] = ()
    fed_by: tuple[str, ...] = ()  # searched layers whose pruning shrinks this one's inputs

    def max_rank_within(self, method: str, in_channels: int,
                        out_channels: int | None = None) -> tuple[int, ...]:
        """``method``'s exact rank of this layer once its inputs are cut to ``in_channels``
        (and its outputs to ``out_channels``)."""
        full, _, *kernel = self.weight_shape
        out = full if out_channels is None else out_channels
        with torch.device("meta"):  # shapes only
            layer: nn.Module = (nn.Linear(in_channels, out) if not kernel
                                else nn.Conv2d(in_channels, out, (kernel[0], kernel[1])))
        return get_method(method).max_rank(layer)

    def choose(self, method: str) -> str:
        """``method`` where this layer supports it, else (a group's pick) its default; a group's
        ``prune`` leaves the layers that cannot be pruned alone as they are (``keep``), so that
        it prunes the channels inside residual blocks only."""
        if method in self.methods:
            return method
        return "keep" if method == "prune" and "keep" in self.methods else self.default_method


@dataclass(frozen=True)
class CoupledSpace:
    """One coupled group, one key: ``keep``, or ``prune`` every member to the same ``k``, MUSCO's
    weakened rank between ``seed`` (the largest EVBMF seed of a member's ``prune``) and every
    channel."""

    group: CoupledGroup
    seed: tuple[int, ...]

    methods: ClassVar[tuple[str, ...]] = ("keep", "prune")

    def kept(self, w: float, scale_log2: float) -> int:
        """The channels every member keeps at strength ``w`` and log2 offset ``scale_log2``."""
        return musco_weaken((self.group.channels,), self.seed, w, scale=2.0 ** scale_log2)[0]


@dataclass(frozen=True)
class SearchSpace:
    """The eligible layers and the space's settings; :meth:`suggest` is the define-by-run part."""

    layers: tuple[LayerSpace, ...]
    config: SpaceConfig
    coupled: tuple[CoupledSpace, ...] = ()  # residual groups, each one key (see the module doc)

    def suggest(self, trial: Any) -> None:
        """Draw every parameter from an Optuna trial; pure (no computation beyond the draws).

        The draws are ``trial.params``; :meth:`plan` turns them into a plan."""
        with warnings.catch_warnings():
            # an enqueued seed may sit outside the strength and offset ranges on purpose (see
            # seeds())
            warnings.filterwarnings("ignore", message="Fixed parameter .* out of range")
            trial.suggest_float("w", *self.config.strength)
            for key, methods in self.keys().items():
                trial.suggest_categorical(f"method.{key}", list(methods))
                trial.suggest_float(f"scale.{key}", *self.config.scale)

    def keys(self) -> dict[str, tuple[str, ...]]:
        """Parameter keys (layer names, or groups) in order, each with the methods it offers."""
        out: dict[str, tuple[str, ...]] = {}
        for layer in self.layers:
            known = out.get(layer.key, ())
            out[layer.key] = known + tuple(m for m in layer.methods if m not in known)
        return out | {c.group.name: c.methods for c in self.coupled}

    def plan(self, params: Mapping[str, Any]) -> Plan:
        """The plan a parameter set stands for (layers whose method is ``keep`` are left out)."""
        w = float(params["w"])
        plan: Plan = {}
        for layer in self.layers:
            method = layer.choose(str(params[f"method.{layer.key}"]))
            if method == "keep":
                continue
            scale = 2.0 ** float(params.get(f"scale.{layer.key}", 0.0))
            plan[layer.name] = LayerChoice(method, musco_weaken(
                layer.reference[method], layer.seed[method], w, scale=scale))
        for coupled in self.coupled:
            if params.get(f"method.{coupled.group.name}") != "prune":
                continue
            k = coupled.kept(w, float(params.get(f"scale.{coupled.group.name}", 0.0)))
            for member in coupled.group.members:
                choice = plan.get(member)
                plan[member] = (LayerChoice("prune", (k,)) if choice is None
                                else LayerChoice(choice.method, choice.rank, prune=k))
        return self._clipped(plan)

    def _clipped(self, plan: Plan) -> Plan:
        """``plan`` with no rank above its layer's exact rank once pruning narrowed the layer
        (its own outputs, or the inputs a pruned layer feeds it)."""
        kept = {n: k for n, c in plan.items() if (k := c.kept_channels) is not None}
        for layer in self.layers:
            choice = plan.get(layer.name)
            narrower = [kept[p] for p in layer.fed_by if p in kept]
            if choice is None or choice.method == "prune" or not (narrower or choice.prune):
                continue
            top = layer.max_rank_within(choice.method, min(narrower, default=layer.weight_shape[1]),
                                        choice.prune)
            plan[layer.name] = dataclasses.replace(choice, rank=tuple(
                min(r, t) for r, t in zip(choice.rank, top, strict=True)))
        return plan

    def seed_params(self, w: float, method: str = "tucker2", *, scale: float = 0.0,
                    fallback: str | None = None) -> dict[str, Any]:
        """Parameters of the classic recipes: every layer ``method`` at ``w`` and log2 offset
        ``scale``; a key that does not offer it takes ``fallback`` (when offered) or its
        first layer's default. Coupled groups are kept: the recipes prune inside the blocks."""
        params: dict[str, Any] = {"w": w}
        offered = self.keys()
        for layer in self.layers:  # a key's first layer decides its fallback
            if f"method.{layer.key}" not in params:
                other = fallback if fallback in offered[layer.key] else layer.default_method
                params[f"method.{layer.key}"] = method if method in offered[layer.key] else other
                params[f"scale.{layer.key}"] = scale
        for coupled in self.coupled:
            params[f"method.{coupled.group.name}"] = "keep"
            params[f"scale.{coupled.group.name}"] = 0.0
        return params

    def seeds(self) -> list[dict[str, Any]]:
        """Enqueued first: Tucker-2 at EVBMF ranks (Kim et al. 2016), then MUSCO-weakened; with
        ``prune`` in the space, uniform L1 pruning of 30 % and 50 % of the channels inside the
        blocks (Li et al. 2017; ``w = 0`` is every channel, the offset scales it; the channels
        residual sums tie are kept); then Tucker-2 keeping a uniform share (``UNIFORM_SHARES``)
        of every layer's channels (:meth:`uniform_params`).

        Why the uniform ones: on ResNet-20 they kept more accuracy at 2.5-4x FLOPs than any
        search front of the same trial budget and fine-tune (``bench/results/search_quality.md``,
        three seeds) and than the searches' picks once trained alike
        (``bench/results/final_quality.md``); enqueued, they put that floor under the front
        and give the sampler good points to start from.

        The seeds keep their own ``w`` and offsets even outside the preset's ranges: they are
        the published recipes, measured as they are (Optuna takes an enqueued value as given).
        """
        seeds = [self.seed_params(w) for w in (1.0, self.config.musco_w)]
        if any("prune" in layer.methods for layer in self.layers):
            seeds += [self.seed_params(0.0, "prune", scale=math.log2(1 - share), fallback="keep")
                      for share in (0.3, 0.5)]
        if any("tucker2" in layer.methods for layer in self.layers):
            seeds += [self.uniform_params(share) for share in self.UNIFORM_SHARES]
        return seeds

    UNIFORM_SHARES: ClassVar[tuple[float, ...]] = (0.5, 0.375)

    def uniform_params(self, share: float) -> dict[str, Any]:
        """Tucker-2 (a key's default where it has none) keeping about ``share`` of each layer's
        channels: ``w = 0`` (MUSCO's break-even rank R) and each key's offset set so that its
        first layer's rank is ``share`` of its exact rank (the other layers of a group take the
        same offset on their own R)."""
        params = self.seed_params(0.0)
        first: dict[str, LayerSpace] = {}
        for layer in self.layers:
            first.setdefault(layer.key, layer)
        for key, layer in first.items():
            method = layer.choose(str(params[f"method.{key}"]))
            if method == "keep":
                continue
            exact = layer.max_rank_within(method, layer.weight_shape[1])
            logs = [math.log2(e / r) for e, r in zip(exact, layer.reference[method], strict=True)]
            params[f"scale.{key}"] = math.log2(share) + sum(logs) / len(logs)
        return params


def _layer_space(model: nn.Module, row: LayerInfo, cfg: SpaceConfig,
                 fed_by: tuple[str, ...] = ()) -> LayerSpace | None:
    layer = model.get_submodule(row.name)
    methods = tuple(m for m in cfg.methods if m != "keep" and m in row.max_rank)
    if not methods:
        return None
    # ranks beyond R cannot pay off, so the strength spans [EVBMF seed, R]
    reference = {m: reference_rank(m, layer) for m in methods}
    seed = {m: seed_rank(m, layer) for m in methods}
    factorizations = [m for m in methods if m != "prune"] or list(methods)
    default = "tucker2" if "tucker2" in methods else ("svd" if "svd" in methods else factorizations[0])
    all_methods = methods + (("keep",) if "keep" in cfg.methods else ())
    return LayerSpace(row.name, all_methods, seed, reference, default,
                      weight_shape=row.weight_shape, fed_by=fed_by)


def build_space(model: nn.Module, rows: Sequence[LayerInfo], cfg: SpaceConfig, *,
                input_shape: Sequence[int] = (1, 3, 32, 32)) -> SearchSpace:
    """The search space over ``model``'s inventory ``rows`` (taken at ``input_shape``) under
    preset ``cfg``.

    Raises:
        UserError: no layer of the model can be searched under this preset.
    """
    chosen = eligible(rows, exclude_first_conv=cfg.exclude_first_conv,
                      exclude_classifier=cfg.exclude_classifier, min_params=cfg.min_params,
                      exclude=cfg.exclude)
    consumers = channel_consumers(model, input_shape) if "prune" in cfg.methods else {}
    fed_by = {r.name: tuple(p for p in sorted(consumers) if r.name in consumers[p]) for r in chosen}
    layers = [s for r in chosen if (s := _layer_space(model, r, cfg, fed_by[r.name])) is not None]
    if not layers:
        raise UserError(
            f"no compressible layer: {len(rows)} conv/linear layers, none eligible under methods "
            f"{list(cfg.methods)}, min_params={cfg.min_params} and the exclusions")
    coupled = _coupled_spaces(model, input_shape, cfg) if "prune" in cfg.methods else ()
    return SearchSpace(tuple(_assign_keys(layers, cfg.groups)), cfg, coupled)


def _coupled_spaces(model: nn.Module, input_shape: Sequence[int],
                    cfg: SpaceConfig) -> tuple[CoupledSpace, ...]:
    """The coupled groups of ``model`` none of whose members ``cfg`` excludes by name."""
    return tuple(
        CoupledSpace(group, (max(seed_rank("prune", model.get_submodule(m))[0]
                                 for m in group.members),))
        for group in coupled_groups(model, input_shape)
        if not any(fnmatch.fnmatchcase(m, g) for m in group.members for g in cfg.exclude))


def _assign_keys(layers: Sequence[LayerSpace], groups: int) -> list[LayerSpace]:
    """Each layer its own key, or ``g0``..``g{N-1}``: N contiguous runs of near-equal length."""
    if groups == 0:
        return [dataclasses.replace(layer, key=layer.name) for layer in layers]
    n = min(groups, len(layers))
    return [dataclasses.replace(layer, key=f"g{i * n // len(layers)}")
            for i, layer in enumerate(layers)]
