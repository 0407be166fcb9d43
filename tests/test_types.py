"""The trial record: what a runner carries back from a worker is what the trial measured."""

from __future__ import annotations

import math

from autorank.types import TrialOutcome


def test_a_report_gives_unset_fields_back_as_none() -> None:
    done = TrialOutcome(val_accuracy=0.5, params=10, flops=20, params_ratio=2.0, flops_ratio=3.0,
                        duration_s=1.5, plan='{"a": 1}', rung=1, steps=40)
    carried = done.report()
    # Ray Tune wants every metric numeric in a result: unset ones travel as 0
    assert carried["latency_ms"] == 0 and carried["predicted_latency_ms"] == 0
    back = TrialOutcome.from_report(carried)
    assert back == done
    assert back.latency_ms is None and back.predicted_latency_ms is None
    failed = TrialOutcome(error="boom", plan="{}", duration_s=0.1, failed=True)
    assert TrialOutcome.from_report(failed.report()) == failed
    measured = TrialOutcome(val_accuracy=0.0, latency_ms=0.0, predicted_latency_ms=1.0)
    again = TrialOutcome.from_report(measured.report())
    assert again.val_accuracy == 0.0 and again.latency_ms == 0.0  # a real zero stays zero
    assert not math.isnan(again.predicted_latency_ms or math.nan)
