"""Plain data types shared across autorank: layer choices, plans, inventory rows, trial results."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerChoice:
    """How one layer is factorized.

    Args:
        method: name of a registered decomposition (see ``autorank.list_methods()``).
        rank: the method's rank tuple; its order is documented on each method
            (``tucker2``: ``(r_in, r_out)``, ``tt``: ``(r1, r2, r3)``, ``cp``/``cp3``/``svd``/
            ``spatial_svd``: ``(r,)``, ``keep``: ``()``).
    """

    method: str
    rank: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank", tuple(int(r) for r in self.rank))

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "rank": list(self.rank)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LayerChoice:
        if not isinstance(data, Mapping) or "method" not in data:
            raise ValueError(f"a layer choice needs a 'method' and a 'rank', got {data!r}")
        return cls(str(data["method"]), tuple(data.get("rank", ())))


Plan = dict[str, LayerChoice]
"""A plan maps a layer's dotted name to its :class:`LayerChoice`; layers not named are kept."""


def plan_to_json(plan: Mapping[str, LayerChoice]) -> str:
    """Serialise a plan to a JSON string with sorted layer names."""
    return json.dumps({k: plan[k].to_json() for k in sorted(plan)}, sort_keys=True)


def plan_from_json(text: str | Mapping[str, Any]) -> Plan:
    """Parse a plan from a JSON string or an already-decoded mapping."""
    data = json.loads(text) if isinstance(text, str) else text
    if not isinstance(data, Mapping):
        raise ValueError(f"a plan is a JSON object of layer name -> choice, got {type(data).__name__}")
    return {str(k): LayerChoice.from_json(v) for k, v in data.items()}


@dataclass(frozen=True)
class LayerInfo:
    """One compressible layer of a model, as listed by :func:`autorank.inventory`.

    ``flops`` count a multiply-add as 2 FLOPs, at the input shape the inventory was taken at.
    ``vbmf_rank`` is the Tucker-2 ``(r_in, r_out)`` EVBMF estimate for convolutions and the
    ``(r,)`` EVBMF estimate for 1x1 convs and linear layers; ``vbmf_ranks`` maps each method
    that supports the layer to its EVBMF-seeded rank, ``max_rank`` to its exact rank, and
    ``ratios`` to the layer's params ratio (dense / factorized) at the seeded rank.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    params: int
    flops: int
    vbmf_rank: tuple[int, ...]
    max_rank: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    vbmf_ranks: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialResult:
    """What one search trial measured. ``state`` is ``"complete"`` or ``"failed"``."""

    number: int
    state: str
    val_accuracy: float = float("nan")
    params: int = 0
    flops: int = 0
    latency_ms: float = float("nan")
    params_ratio: float = float("nan")
    flops_ratio: float = float("nan")
    duration_s: float = 0.0
    plan: str = "{}"
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)
