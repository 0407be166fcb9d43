"""Latency as the target runs it: per-layer tables measured on the target device, threads,
batch and backend (torch eager or onnxruntime), and plans' latency predicted from them."""

from __future__ import annotations

from .table import Candidate, LatencyModel, LatencyTable, Target, bucket, measure_models
from .timing import BACKENDS, time_interleaved

__all__ = ["BACKENDS", "Candidate", "LatencyModel", "LatencyTable", "Target", "bucket",
           "measure_models", "time_interleaved"]
