"""Plain data types shared across autorank: layer choices, plans, inventory rows, trial outcomes
and the baseline record."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerChoice:
    """How one layer is compressed.

    Args:
        method: name of a registered method (see ``autorank.list_methods()``).
        rank: the method's rank tuple; its order is documented on each method
            (``tucker2``: ``(r_in, r_out)``, ``tt``: ``(r1, r2, r3)``, ``cp``/``cp3``/``svd``/
            ``spatial_svd``: ``(r,)``, ``prune``: ``(k,)`` output channels kept, ``keep``: ``()``).
        prune: for a factorization, the output channels kept before it (the layer is pruned
            first, then what remains is factorized); None: not pruned.
    """

    method: str
    rank: tuple[int, ...] = ()
    prune: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank", tuple(int(r) for r in self.rank))
        if self.prune is not None:
            object.__setattr__(self, "prune", int(self.prune))

    def __str__(self) -> str:
        pruned = f" on {self.prune} kept channels" if self.prune is not None else ""
        return f"{self.method} {tuple(self.rank)}{pruned}"

    @property
    def kept_channels(self) -> int | None:
        """The output channels this choice keeps by pruning, if it prunes."""
        return self.rank[0] if self.method == "prune" else self.prune

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "rank": list(self.rank)}
        if self.prune is not None:
            out["prune"] = self.prune
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LayerChoice:
        if not isinstance(data, Mapping) or "method" not in data:
            raise ValueError(f"a layer choice needs a 'method' and a 'rank', got {data!r}")
        prune = data.get("prune")
        return cls(str(data["method"]), tuple(data.get("rank", ())),
                   None if prune is None else int(prune))


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
class TrialOutcome:
    """What one search trial measured; the one record every runner, the study, ``trials.csv``
    and the reports read.

    A failed trial carries its ``error``, ``plan`` and ``duration_s``; its metrics are None.
    ``flops`` count a multiply-add as 2; the ratios are the baseline's over the trial's.
    """

    val_accuracy: float | None = None
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None  # median at batch 1
    latency_batch_ms: float | None = None  # median at the space's latency_batch
    # batch 1 on the trial's device and threads, from the latency table (autorank.latency);
    # set when latency is an objective: the search steers on it, not on the noisy measurement
    predicted_latency_ms: float | None = None
    params_ratio: float | None = None
    flops_ratio: float | None = None
    duration_s: float = 0.0  # the whole trial, plan building included
    finetune_s: float | None = None  # BN recalibration and fine-tune
    evaluate_s: float | None = None
    error: str = ""  # why it failed ("" when it completed)
    plan: str = "{}"  # JSON (plan_to_json)
    rung: int = 0  # the multi-fidelity rung the accuracy was measured at (0: the first)
    steps: int | None = None  # fine-tune steps behind the accuracy, all rungs so far
    failed: bool = False

    def stored(self) -> dict[str, Any]:
        """The fields kept with the trial in the study: every set value but ``failed``."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k != "failed" and v is not None}

    def report(self) -> dict[str, Any]:
        """All fields for a runner to carry back, unset ones as 0 (Ray Tune wants the
        searcher's metrics in every result) and named in ``unset``, so that
        :meth:`from_report` gives them back as None."""
        fields = dataclasses.asdict(self)
        out: dict[str, Any] = {k: (0 if v is None else v) for k, v in fields.items()}
        out["unset"] = ",".join(k for k, v in fields.items() if v is None)
        return out

    @classmethod
    def from_report(cls, data: Mapping[str, Any]) -> TrialOutcome:
        """The outcome :meth:`report` carried (unknown keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unset = set(str(data.get("unset", "")).split(","))
        values = {k: v for k, v in data.items() if k in known and k not in unset}
        if values.get("failed"):
            values = {k: values[k] for k in ("error", "plan", "duration_s", "rung", "failed")
                      if k in values}
        return cls(**values)


TRIAL_COLUMNS = ["number", "state", *(f.name for f in dataclasses.fields(TrialOutcome)
                                      if f.name != "failed")]
"""The leading columns of ``trials.csv``: the trial's number and state, then its outcome."""


@dataclass(frozen=True)
class Baseline(Mapping[str, Any]):
    """The dense baseline of a search, as ``baseline.json`` stores it.

    A mapping too (``baseline["val_accuracy"]``, ``baseline.get("test_accuracy")``), since
    that is how a run's ``baseline.json`` reads; a field not measured (None: ``test_accuracy``
    until the search has finished) is absent from the mapping.
    """

    model: str = ""
    dataset: str = ""
    val_source: str = ""
    val_images: int = 0
    test_images: int = 0
    val_accuracy: float | None = None
    params: int = 0
    flops: int = 0
    latency_ms: float | None = None
    latency_batch_ms: float | None = None
    test_accuracy: float | None = None
    num_classes: int = 0  # 0: not recorded (a run written before it was)
    # a checkpoint for other classes: its transfer fine-tune (autorank.baseline.transfer_baseline)
    transfer: dict[str, Any] | None = None

    def at_chance(self, margin: float = 0.02) -> bool:
        """Whether the validation accuracy is within ``margin`` of guessing (1 / classes): a
        baseline that learned nothing, whose compressed models' ratios mean nothing."""
        return bool(self.num_classes) and self.val_accuracy is not None and (
            self.val_accuracy <= 1.0 / self.num_classes + margin)

    def __getitem__(self, key: str) -> Any:
        if key not in self._names() or getattr(self, key) is None:
            raise KeyError(key)  # not measured (yet): absent, as .get() expects
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(k for k in self._names() if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Baseline:
        """The record ``baseline.json`` holds (keys it does not know are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls._names()})
