"""The search space: which layers, which methods, which ranks, as a YAML preset and an Optuna
define-by-run function.

Structure the sampler can learn with ~50 trials: one global strength ``w`` (MUSCO's weakening
factor, Gusak et al. 2019: rank = R - w (R - r_vbmf), so w = 1 is the EVBMF rank of Kim et al.
2016 and w = 0 the rank at which the factorization costs as much as the dense layer), plus a
method and a log2 offset of the rank around that, per layer or, with ``groups: N``, per
contiguous depth group of layers (a handful of parameters instead of two per layer: a budget of
~50 trials can learn that, say, the last stage takes the compression and the first is kept).
Parameter names are stable across trials: ``w``, ``method.<key>``, ``scale.<key>`` where the
key is the layer's dotted name, or ``g0``, ``g1``, ... for groups.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ..decompose import get_method, list_methods
from ..errors import UserError
from ..rank import rank_from_ratio, vbmf_rank_for
from ..types import LayerChoice, LayerInfo, Plan

OBJECTIVES: dict[str, tuple[str, str]] = {
    "accuracy": ("val_accuracy", "max"),
    "params": ("params", "min"),
    "flops": ("flops", "min"),
    "latency": ("latency_ms", "min"),
}
SAMPLERS = ("tpe", "gp", "random", "nsga2")
PRESETS_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


@dataclass(frozen=True)
class FinetuneSettings:
    """The short fine-tune every trial gets."""

    steps: int = 200
    lr: float = 0.01
    batch_size: int = 128
    distill: bool = True  # Hinton et al. 2015 KD from the dense baseline
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0
    bn_batches: int = 20  # BatchNorm recalibration batches before fine-tuning (0: off)


@dataclass(frozen=True)
class SpaceConfig:
    """A search-space preset (``search_spaces/*.yaml``); every key is optional."""

    methods: tuple[str, ...] = ("tucker2", "cp3", "tt", "svd", "spatial_svd", "keep")
    exclude: tuple[str, ...] = ()  # globs on dotted layer names
    exclude_first_conv: bool = True
    exclude_classifier: bool = True
    min_params: int = 1000  # smaller layers are kept: their factorization cannot pay off
    strength: tuple[float, float] = (0.0, 1.0)  # range of the global weakening factor w
    scale: tuple[float, float] = (-1.0, 1.0)  # range of the per-layer (or per-group) log2 rank offset
    groups: int = 0  # 0: a method and an offset per layer; N: per contiguous group of layers
    musco_w: float = 0.8  # the MUSCO seed's weakening factor (Gusak et al. 2019)
    objectives: tuple[str, ...] = ("accuracy", "params")
    # Optuna's Gaussian-process sampler with the max_drop constraint: ahead of random sampling
    # on each of 3 seeds in bench/search_quality.py (ResNet-20, 40 trials; results in
    # bench/results/search_quality.md), where multivariate TPE had tied random sampling
    sampler: str = "gp"
    # The sampler's region of interest: a trial whose validation accuracy falls more than this
    # below the baseline's is infeasible to it (Optuna's constraints), so it samples where
    # users pick models; None: every trial counts alike. The front lists every trial anyway.
    max_drop: float | None = 0.10
    latency_batch: int = 32
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)

    def __post_init__(self) -> None:
        _check_space(self)


def _fail(key: str, why: str) -> UserError:
    return UserError(f"search space: {key}: {why}")


def _check_range(key: str, value: tuple[float, float], lo: float, hi: float) -> None:
    if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
        raise _fail(key, f"needs [low, high] with {lo} <= low <= high <= {hi}, got {list(value)}")


def _check_space(cfg: SpaceConfig) -> None:
    if not cfg.methods:
        raise _fail("methods", f"is empty; give at least one of {list_methods()}")
    for m in cfg.methods:
        if m not in list_methods():
            raise _fail("methods", f"unknown method {m!r}; expected one of {list_methods()}")
    if not cfg.objectives or cfg.objectives[0] != "accuracy":
        raise _fail("objectives", f"must start with 'accuracy', then any of {list(OBJECTIVES)[1:]}")
    for o in cfg.objectives:
        if o not in OBJECTIVES:
            raise _fail("objectives", f"unknown objective {o!r}; expected one of {list(OBJECTIVES)}")
    if cfg.sampler not in SAMPLERS:
        raise _fail("sampler", f"unknown sampler {cfg.sampler!r}; expected one of {list(SAMPLERS)}")
    _check_range("strength", cfg.strength, 0.0, 1.0)
    _check_range("scale", cfg.scale, -8.0, 8.0)
    if cfg.max_drop is not None and not 0.0 < cfg.max_drop <= 1.0:
        raise _fail("max_drop", f"must be in (0, 1] or null, got {cfg.max_drop}")
    if not 0.0 <= cfg.musco_w <= 1.0:
        raise _fail("musco_w", f"must be in [0, 1], got {cfg.musco_w}")
    if cfg.groups < 0:
        raise _fail("groups", f"must be >= 0 (0: per layer), got {cfg.groups}")
    if cfg.min_params < 0 or cfg.latency_batch < 1:
        raise _fail("min_params/latency_batch", "must be >= 0 and >= 1")
    ft = cfg.finetune
    if ft.steps < 0 or ft.lr <= 0 or ft.batch_size < 1 or ft.bn_batches < 0:
        raise _fail("finetune", "needs steps >= 0, lr > 0, batch_size >= 1, bn_batches >= 0")
    if not 0.0 <= ft.kd_alpha <= 1.0 or ft.kd_temperature <= 0:
        raise _fail("finetune", "needs 0 <= kd_alpha <= 1 and kd_temperature > 0")


_TYPES: dict[str, type] = {"methods": tuple, "exclude": tuple, "exclude_first_conv": bool,
                           "exclude_classifier": bool, "min_params": int, "strength": tuple,
                           "scale": tuple, "groups": int, "musco_w": float, "max_drop": float,
                           "objectives": tuple, "sampler": str, "latency_batch": int, "finetune": dict}


_NULLABLE = {"max_drop"}


def _typed(key: str, value: Any, want: type) -> Any:
    if value is None and key in _NULLABLE:
        return None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is tuple and isinstance(value, list):
        return tuple(value)
    if want is tuple and isinstance(value, str):
        return (value,)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise _fail(key, f"expected {want.__name__}, got {type(value).__name__} {value!r}")
    return value


def _finetune_from(data: Mapping[str, Any]) -> FinetuneSettings:
    known = {f.name: f.type for f in fields(FinetuneSettings)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise _fail(f"finetune.{key}", f"unknown key; expected one of {sorted(known)}")
        want = {"int": int, "float": float, "bool": bool}[str(known[key])]
        out[key] = _typed(f"finetune.{key}", value, want)
    return FinetuneSettings(**out)


def space_from_dict(data: Mapping[str, Any], *, base: SpaceConfig | None = None) -> SpaceConfig:
    """A :class:`SpaceConfig` from a mapping, over ``base``; unknown keys and wrong types refused."""
    if not isinstance(data, Mapping):
        raise UserError(f"search space: expected a mapping of keys, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TYPES:
            raise _fail(str(key), f"unknown key; expected one of {sorted(_TYPES)}")
        values[key] = _typed(key, value, _TYPES[key])
    if "finetune" in values:
        ft_base = (base or SpaceConfig()).finetune
        merged = {f.name: getattr(ft_base, f.name) for f in fields(FinetuneSettings)}
        merged.update(values["finetune"])
        values["finetune"] = _finetune_from(merged)
    cfg = base or SpaceConfig()
    return SpaceConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(SpaceConfig)}, **values})


def list_presets() -> list[str]:
    """Names of the search-space presets shipped with autorank."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SpaceConfig:
    """Load a preset by name (``default``, see :func:`list_presets`) or a YAML file path.

    YAML is read with ``yaml.safe_load``: tags that build Python objects are refused.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise UserError(f"unknown search space {str(name_or_path)!r}; expected a YAML file "
                            f"or one of {list_presets()}")
    if not path.exists():
        raise UserError(f"search space file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"search space {str(path)!r} is not valid YAML: "
                        f"{str(err).splitlines()[0]}") from err
    return space_from_dict(data)


@dataclass(frozen=True)
class LayerSpace:
    """One searchable layer: its methods and, per method, the EVBMF seed and reference rank R."""

    name: str
    methods: tuple[str, ...]
    seed: dict[str, tuple[int, ...]]
    full: dict[str, tuple[int, ...]]
    default_method: str
    key: str = ""  # whose ``method.``/``scale.`` parameters it takes: itself, or its group

    def choose(self, method: str) -> str:
        """``method`` where this layer supports it, else its default (a group's pick)."""
        return method if method in self.methods else self.default_method


@dataclass(frozen=True)
class SearchSpace:
    """The eligible layers and the space's settings; :meth:`suggest` is the define-by-run part."""

    layers: tuple[LayerSpace, ...]
    config: SpaceConfig

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Draw every parameter from an Optuna trial; pure (no computation beyond the draws)."""
        with warnings.catch_warnings():
            # an enqueued seed may sit outside the strength range on purpose (see seeds())
            warnings.filterwarnings("ignore", message="Fixed parameter .* out of range")
            trial.suggest_float("w", *self.config.strength)
        for key, methods in self.keys().items():
            trial.suggest_categorical(f"method.{key}", list(methods))
            trial.suggest_float(f"scale.{key}", *self.config.scale)
        return {"trial_number": trial.number}

    def keys(self) -> dict[str, tuple[str, ...]]:
        """Parameter keys (layer names, or groups) in order, each with the methods it offers."""
        out: dict[str, tuple[str, ...]] = {}
        for layer in self.layers:
            known = out.get(layer.key, ())
            out[layer.key] = known + tuple(m for m in layer.methods if m not in known)
        return out

    def plan(self, params: Mapping[str, Any]) -> Plan:
        """The plan a parameter set stands for (layers whose method is ``keep`` are left out)."""
        w = float(params["w"])
        plan: Plan = {}
        for layer in self.layers:
            method = layer.choose(str(params[f"method.{layer.key}"]))
            if method == "keep":
                continue
            factor = 2.0 ** float(params.get(f"scale.{layer.key}", 0.0))
            rank = tuple(
                max(1, min(r_full, round((r_full - w * (r_full - r_seed)) * factor)))
                for r_seed, r_full in zip(layer.seed[method], layer.full[method], strict=True))
            plan[layer.name] = LayerChoice(method, rank)
        return plan

    def seed_params(self, w: float, method: str = "tucker2") -> dict[str, Any]:
        """Parameters of the classic recipes: every layer ``method`` (or its default) at ``w``."""
        params: dict[str, Any] = {"w": w}
        offered = self.keys()
        for layer in self.layers:  # a key's first layer decides its fallback
            if f"method.{layer.key}" not in params:
                ok = method in offered[layer.key]
                params[f"method.{layer.key}"] = method if ok else layer.default_method
                params[f"scale.{layer.key}"] = 0.0
        return params

    def seeds(self) -> list[dict[str, Any]]:
        """Enqueued first: Tucker-2 at EVBMF ranks (Kim et al. 2016), then MUSCO-weakened.

        The seeds keep their own ``w`` even outside the preset's strength range: they are the
        published recipes, measured as they are (Optuna takes an enqueued value as given).
        """
        return [self.seed_params(w) for w in (1.0, self.config.musco_w)]


def _eligible(rows: Sequence[LayerInfo], cfg: SpaceConfig) -> list[LayerInfo]:
    convs = [r for r in rows if r.kind == "conv2d"]
    linears = [r for r in rows if r.kind == "linear"]
    skip = set()
    if cfg.exclude_first_conv and convs:
        skip.add(convs[0].name)
    if cfg.exclude_classifier and linears:
        skip.add(linears[-1].name)
    return [r for r in rows if r.name not in skip and r.params >= cfg.min_params
            and not any(fnmatch.fnmatchcase(r.name, g) for g in cfg.exclude)]


def _layer_space(model: nn.Module, row: LayerInfo, cfg: SpaceConfig) -> LayerSpace | None:
    layer = model.get_submodule(row.name)
    methods = tuple(m for m in cfg.methods if m != "keep" and m in row.max_rank)
    if not methods:
        return None
    seed, full = {}, {}
    for m in methods:
        # R: the rank at which the factorization costs as much as the dense layer (never above
        # max): ranks beyond it cannot pay off, so the strength spans [EVBMF seed, R].
        top = get_method(m).max_rank(layer)
        same_cost = rank_from_ratio(m, layer, 1.0)
        full[m] = tuple(min(t, s) for t, s in zip(top, same_cost, strict=True))
        seed[m] = tuple(min(v, f) for v, f in zip(vbmf_rank_for(m, layer), full[m], strict=True))
    default = "tucker2" if "tucker2" in methods else ("svd" if "svd" in methods else methods[0])
    all_methods = methods + (("keep",) if "keep" in cfg.methods else ())
    return LayerSpace(row.name, all_methods, seed, full, default)


def build_space(model: nn.Module, rows: Sequence[LayerInfo], cfg: SpaceConfig) -> SearchSpace:
    """The search space over ``model``'s inventory ``rows`` under preset ``cfg``.

    Raises:
        UserError: no layer of the model can be searched under this preset.
    """
    layers = [s for r in _eligible(rows, cfg) if (s := _layer_space(model, r, cfg)) is not None]
    if not layers:
        raise UserError(
            f"no compressible layer: {len(rows)} conv/linear layers, none eligible under methods "
            f"{list(cfg.methods)}, min_params={cfg.min_params} and the exclusions")
    return SearchSpace(tuple(_assign_keys(layers, cfg.groups)), cfg)


def _assign_keys(layers: Sequence[LayerSpace], groups: int) -> list[LayerSpace]:
    """Each layer its own key, or ``g0``..``g{N-1}``: N contiguous runs of near-equal length."""
    if groups == 0:
        return [dataclasses.replace(layer, key=layer.name) for layer in layers]
    n = min(groups, len(layers))
    return [dataclasses.replace(layer, key=f"g{i * n // len(layers)}")
            for i, layer in enumerate(layers)]


def objective_metrics(cfg: SpaceConfig) -> tuple[list[str], list[str]]:
    """Metric names and Ray/Optuna modes (``max``/``min``) of the preset's objectives."""
    pairs = [OBJECTIVES[o] for o in cfg.objectives]
    return [p[0] for p in pairs], [p[1] for p in pairs]

