"""Timing modules on a backend: torch eager or onnxruntime, interleaved so drift spreads evenly.

One run's drift (another process waking, the CPU's clock) biases whatever is measured while it
lasts. Timing candidates one after the other lets it bias one candidate; :func:`time_interleaved`
takes one sample of every candidate per round, rotating the order, and keeps each one's median.
A sample times enough back-to-back calls to last ``min_sample_ms`` (a 30 µs layer timed alone
reads the timer's own noise).
"""

from __future__ import annotations

import io
import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..runtime import num_threads

__all__ = ["BACKENDS", "backend_versions", "compile_call", "time_interleaved"]

BACKENDS = ("torch", "onnxruntime")
Call = Callable[[], Any]


def backend_versions(backend: str) -> dict[str, str]:
    """The library versions a backend's timings depend on (part of a table's cache key)."""
    versions = {"torch": str(torch.__version__)}
    if backend == "onnxruntime":
        import onnxruntime as ort

        versions["onnxruntime"] = ort.__version__
    return versions


def _onnx_call(module: nn.Module, x: torch.Tensor, threads: int) -> Call:
    import onnxruntime as ort

    buffer = io.BytesIO()
    # the TorchScript exporter (dynamo=False): the dynamo one needs onnxscript and takes seconds;
    # its deprecation and shape-inference warnings say nothing about the module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.cpu().eval(), (x.cpu(),), buffer,  # type: ignore[arg-type]
                          dynamo=False,
                          input_names=["input"], output_names=["output"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # onnxruntime's pool threads spin after each run by default; with many sessions timed in
    # turn, one session's spinning threads steal the cores the next session runs on
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"input": x.cpu().numpy()}
    return lambda: session.run(None, feed)


def compile_call(module: nn.Module, x: torch.Tensor, backend: str, threads: int) -> Call:
    """A no-argument call running ``module`` on ``x`` once on ``backend`` (inference mode;
    on CUDA it waits for the kernels to finish)."""
    if backend == "onnxruntime":
        return _onnx_call(module, x, threads)
    if backend != "torch":
        raise ValueError(f"unknown latency backend {backend!r}; expected one of {BACKENDS}")
    module = module.eval()
    if x.device.type == "cuda":
        def call() -> Any:
            with torch.inference_mode():
                out = module(x)
            torch.cuda.synchronize()
            return out
        return call

    def run() -> Any:
        with torch.inference_mode():
            return module(x)
    return run


def time_interleaved(calls: Mapping[Any, Call], *, threads: int, repeats: int = 15,
                     warmup: int = 3, min_sample_ms: float = 1.0) -> dict[Any, float]:
    """Median milliseconds per call of every entry of ``calls``, sampled round-robin.

    Each entry first runs ``warmup`` times, then its calls per sample are set so a sample lasts
    about ``min_sample_ms``; then ``repeats`` rounds take one sample of every entry, each round
    starting one entry later than the last.
    """
    keys = list(calls)
    inner: dict[Any, int] = {}
    with num_threads(threads):
        for key in keys:
            for _ in range(warmup):
                calls[key]()
            start = time.perf_counter()
            calls[key]()
            once_ms = (time.perf_counter() - start) * 1e3
            inner[key] = max(1, math.ceil(min_sample_ms / max(once_ms, 1e-3)))
        samples: dict[Any, list[float]] = {k: [] for k in keys}
        for round_ in range(repeats):
            shift = round_ % len(keys) if keys else 0
            for key in keys[shift:] + keys[:shift]:
                call, n = calls[key], inner[key]
                start = time.perf_counter()
                for _ in range(n):
                    call()
                samples[key].append((time.perf_counter() - start) * 1e3 / n)
    return {k: statistics.median(v) for k, v in samples.items()}
