"""The compressible layers of a model, with their cost and EVBMF rank estimates."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import pandas as pd
from torch import nn

from .decompose import get_method, list_methods, prunable_layers
from .decompose._base import weight_of
from .metrics import flops_by_layer
from .rank import vbmf_rank_for
from .types import LayerInfo

__all__ = ["compressible_methods", "eligible", "inventory", "inventory_frame", "inventory_table"]


def compressible_methods(layer: nn.Module) -> list[str]:
    """The registered methods other than ``keep`` that can factorize ``layer``."""
    return [m for m in list_methods() if m != "keep" and get_method(m).supports(layer)]


def _layer_info(name: str, layer: nn.Module, flops: int, methods: list[str]) -> LayerInfo:
    params = sum(p.numel() for p in layer.parameters())
    seeds = {m: vbmf_rank_for(m, layer) for m in methods}
    primary = "tucker2" if "tucker2" in seeds else "svd"
    return LayerInfo(
        name=name,
        kind=type(layer).__name__.lower(),
        weight_shape=tuple(int(d) for d in weight_of(layer).shape),
        params=params,
        flops=flops,
        vbmf_rank=seeds.get(primary, ()),
        max_rank={m: get_method(m).max_rank(layer) for m in methods},
        ratios={m: params / get_method(m).num_params(layer, r) for m, r in seeds.items()},
        vbmf_ranks=seeds,
    )


def inventory(
    model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)
) -> list[LayerInfo]:
    """One row per compressible layer (a Conv2d or Linear some method can factorize).

    Rows follow the model's module order. ``flops`` are that layer's FLOPs (multiply-add = 2)
    at ``input_shape``; ``vbmf_rank`` is the Tucker-2 ``(r_in, r_out)`` EVBMF estimate of a
    k x k conv (Kim et al. 2016) and the SVD EVBMF rank of a 1x1 conv or a linear layer;
    ``vbmf_ranks`` and ``ratios`` give, per method, the EVBMF-seeded rank and the layer's params
    ratio there.
    """
    flops = flops_by_layer(model, input_shape)
    prunable = prunable_layers(model, input_shape) if "prune" in list_methods() else set()
    rows = []
    for name, layer in model.named_modules():
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        # pruning depends on the graph: only layers whose channels are their own
        methods = [m for m in compressible_methods(layer) if m != "prune" or name in prunable]
        if methods:
            rows.append(_layer_info(name, layer, flops.get(name, 0), methods))
    return rows


def eligible(rows: Sequence[LayerInfo], *, exclude_first_conv: bool = True,
             exclude_classifier: bool = True, min_params: int = 0,
             exclude: Sequence[str] = ()) -> list[LayerInfo]:
    """The inventory ``rows`` a search or a strategy may compress: by default not the first
    conv (the stem, whose 3 input channels leave nothing to factorize) nor the last linear
    layer (the classifier), no layer under ``min_params``, none matching an ``exclude`` glob
    on its dotted name."""
    convs = [r.name for r in rows if r.kind == "conv2d"]
    linears = [r.name for r in rows if r.kind == "linear"]
    skip = set(convs[:1] if exclude_first_conv else []) | set(linears[-1:] if exclude_classifier else [])
    return [r for r in rows if r.name not in skip and r.params >= min_params
            and not any(fnmatch.fnmatchcase(r.name, g) for g in exclude)]


def inventory_frame(rows: Sequence[LayerInfo]) -> pd.DataFrame:
    """The inventory as a table: one row per layer, per-method params ratios at EVBMF seeds."""
    methods = sorted({m for r in rows for m in r.ratios})
    records = []
    for r in rows:
        rec: dict[str, object] = {
            "layer": r.name, "type": r.kind, "weight_shape": "x".join(map(str, r.weight_shape)),
            "params": r.params, "mflops": r.flops / 1e6,
            "vbmf_rank": ",".join(map(str, r.vbmf_rank)),
        }
        rec.update({f"ratio_{m}": r.ratios.get(m, float("nan")) for m in methods})
        records.append(rec)
    return pd.DataFrame.from_records(records)


def inventory_table(model: nn.Module, input_shape: Sequence[int], *, fmt: str = "table") -> str:
    """The inventory of ``model`` rendered as an aligned table, CSV or JSON records."""
    frame = inventory_frame(inventory(model, input_shape))
    if fmt == "csv":
        return str(frame.to_csv(index=False, float_format="%.4g"))
    if fmt == "json":
        return str(frame.to_json(orient="records", indent=1))
    return str(frame.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
