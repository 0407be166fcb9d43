"""What ``export.json`` says of an exported model (:class:`ExportInfo`), and measuring it
(:func:`describe`): what the model is built from and expects, its cost beside the dense
baseline's, and what its origin adds."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .data import DataBundle
from .metrics import measure_cost


@dataclass(frozen=True)
class ExportInfo(Mapping[str, Any]):
    """What ``export.json`` says of an exported model: what it is built from and expects, its
    cost measured beside the dense baseline's, and (``extra``) what its origin adds -- the run
    and trial or the strategy, the accuracies, the ONNX check, the recorded layouts.

    It reads as the JSON object it is stored as: ``info["test_accuracy"]``, ``info.get(...)``;
    a field that was not measured (None) is absent from it. ``baseline`` holds the dense
    model's cost and accuracies.
    """

    model_name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dataset: str | None = None
    test_images: int | None = None
    val_source: str | None = None
    latency_batch: int | None = None
    baseline: Mapping[str, Any] | None = field(default=None)
    threads: int | None = None
    torch: str | None = None
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    latency_batch_ms: float | None = None
    params_ratio: float | None = None
    flops_ratio: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def _core(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    def __getitem__(self, key: str) -> Any:
        if key in self._core():
            value = getattr(self, key)
            if value is None:
                raise KeyError(key)
            return list(value) if isinstance(value, tuple) else value
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter((*(k for k in self._core() if getattr(self, k) is not None), *self.extra))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def with_extra(self, **more: Any) -> ExportInfo:
        """This record with ``more`` added to (or replacing entries of) ``extra``."""
        return dataclasses.replace(self, extra={**self.extra, **more})

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``export.json``."""
        return {key: self[key] for key in self}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportInfo:
        """The record an ``export.json`` object holds (its other keys go to ``extra``)."""
        core: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                for k, v in data.items() if k in cls._core()}
        return cls(**core, extra={k: v for k, v in data.items() if k not in cls._core()})


def _cost(model: nn.Module, input_shape: tuple[int, ...], latency_batch: int) -> dict[str, Any]:
    """params, flops, latency_ms, latency_batch_ms (``export.json``'s keys), measured now."""
    cost = dataclasses.asdict(measure_cost(model, input_shape, latency_batch=latency_batch))
    cost.pop("latency_batch")  # recorded once, beside the threads and torch version
    return cost


def deployed_latency(model: nn.Module, baseline: nn.Module, input_shape: tuple[int, ...],
                     latency_batch: int) -> dict[str, Any]:
    """Median latency (ms) of ``model`` and ``baseline`` as deployed (:func:`autorank.deploy`:
    BatchNorm folded, factors merged), the two interleaved by the latency table's protocol, at
    batch 1 and ``latency_batch``, in torch and, where installed, onnxruntime. A model that
    ``torch.fx`` cannot trace is timed as it is, and ``deploy_error`` says why."""
    import importlib.util

    from ._deploy import deploy
    from .latency import Target, measure_models

    shape = (1, *input_shape)
    out: dict[str, Any] = {}
    try:
        models: dict[str, nn.Module] = {"model": deploy(model.cpu(), shape),
                                        "baseline": deploy(baseline.cpu(), shape)}
    except Exception as err:  # fx cannot trace data-dependent control flow
        out["deploy_error"] = f"{type(err).__name__}: {err}"
        models = {"model": model.cpu().eval(), "baseline": baseline.cpu().eval()}
    backends = ["torch"]
    if all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime")):
        backends.append("onnxruntime")
    for backend in backends:
        for batch in sorted({1, latency_batch}):
            target = Target(threads=torch.get_num_threads(), batch=batch, backend=backend)
            out[f"{backend}_batch_{batch}"] = measure_models(models, input_shape, target,
                                                             repeats=9 if batch == 1 else 5)
    return out


def describe(model: nn.Module, baseline: nn.Module, data: DataBundle, *, model_name: str,
             dataset: str, latency_batch: int, baseline_accuracy: Mapping[str, Any],
             **extra: Any) -> ExportInfo:
    """What ``export.json`` says of any exported model: what it is built from and expects, and
    its params, FLOPs and latency against the dense baseline's, measured now; ``extra`` (the
    accuracies, where it comes from) is added as given."""
    from .models import get_model_spec

    shape = data.input_shape
    mine = _cost(model.cpu(), shape, latency_batch)
    dense = _cost(baseline.cpu(), shape, latency_batch)
    spec = get_model_spec(model_name)
    return ExportInfo.from_json({
        "model_name": model_name, "num_classes": data.num_classes, "input_shape": list(shape),
        "mean": list(spec.mean), "std": list(spec.std), "dataset": dataset,
        "test_images": data.num_examples("test"), "val_source": data.val_source,
        "latency_batch": latency_batch, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "baseline": {**dense, **baseline_accuracy},
        **mine, "deployed_latency": deployed_latency(model, baseline, shape, latency_batch),
        **extra,
        "params_ratio": dense["params"] / mine["params"],
        "flops_ratio": dense["flops"] / mine["flops"] if mine["flops"] else None,
    })
