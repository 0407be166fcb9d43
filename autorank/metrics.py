"""Cost of a model: parameters, FLOPs (multiply-add = 2) and measured latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .runtime import num_threads

__all__ = ["Cost", "count_flops", "count_params", "flops_by_layer", "measure_cost", "measure_latency"]


def count_params(model: nn.Module) -> int:
    """Every parameter of ``model`` (BatchNorm's included), no buffers."""
    return sum(p.numel() for p in model.parameters())


def _example(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    return torch.zeros(tuple(input_shape), device=device, dtype=dtype)


def _flop_counts(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(_example(model, input_shape))
    finally:
        model.train(was_training)
    # FlopCounterMode names modules "<RootClass>.<dotted name>" and the whole run "Global".
    counts = {"": int(counter.get_total_flops())}
    for key, per_op in counter.get_flop_counts().items():
        if key != "Global" and "." in key:
            counts[key.split(".", 1)[1]] = int(sum(per_op.values()))
    return counts


def count_flops(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> int:
    """FLOPs of one forward pass at ``input_shape``, a multiply-add counted as 2 FLOPs.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products
    (the cost low-rank factorization changes); element-wise ops, pooling and BatchNorm are
    not counted.
    """
    return _flop_counts(model, input_shape)[""]


def flops_by_layer(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> dict[str, int]:
    """FLOPs (multiply-add = 2) of every submodule by dotted name; ``""`` is the whole model."""
    return _flop_counts(model, input_shape)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 32, 32),
    *,
    batch_size: int | None = None,
    threads: int | None = None,
    repeats: int = 30,
    warmup: int = 5,
) -> float:
    """Median wall time of one forward pass in milliseconds (inference mode, after warm-up).

    Args:
        model: the model, measured on the device its parameters are on.
        input_shape: the input's shape; ``batch_size`` replaces its first entry when given.
        threads: torch intra-op threads during the measurement (default: unchanged).
        repeats: timed passes; the median is returned.
        warmup: untimed passes first.
    """
    shape = list(input_shape)
    if batch_size is not None:
        shape[0] = batch_size
    x = _example(model, shape)
    cuda = x.device.type == "cuda"
    was_training = model.training
    model.eval()
    times = []
    try:
        with num_threads(threads), torch.inference_mode():
            for i in range(warmup + repeats):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if cuda:
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        model.train(was_training)
    return statistics.median(times)


# The one latency protocol of trials, baselines and exports: median of REPEATS timed passes
# after WARMUP untimed ones, at batch 1 and at the run's latency batch (fewer passes: each
# costs ``latency_batch`` times more).
LATENCY_PROTOCOL = {"batch_1": (20, 3), "batch_n": (8, 2)}


@dataclass(frozen=True)
class Cost:
    """What a model costs: params, FLOPs (multiply-add = 2) and median latency in ms at batch
    1 and at ``latency_batch``, all measured by :func:`measure_cost`."""

    params: int
    flops: int
    latency_ms: float
    latency_batch_ms: float
    latency_batch: int

    def ratios(self, baseline: Cost) -> dict[str, float]:
        """``params_ratio`` and ``flops_ratio``: the baseline's over this model's."""
        return {"params_ratio": baseline.params / self.params if self.params else float("inf"),
                "flops_ratio": baseline.flops / self.flops if self.flops else float("inf")}


def measure_cost(model: nn.Module, input_shape: Sequence[int], *, latency_batch: int = 32) -> Cost:
    """Params, FLOPs and latency of ``model`` for inputs of ``input_shape`` (C, H, W), by the
    one protocol (:data:`LATENCY_PROTOCOL`), on the device its parameters are on."""
    shape = (1, *input_shape)
    (r1, w1), (rn, wn) = LATENCY_PROTOCOL["batch_1"], LATENCY_PROTOCOL["batch_n"]
    return Cost(params=count_params(model), flops=count_flops(model, shape),
                latency_ms=measure_latency(model, shape, repeats=r1, warmup=w1),
                latency_batch_ms=measure_latency(model, shape, batch_size=latency_batch,
                                                 repeats=rn, warmup=wn),
                latency_batch=latency_batch)
