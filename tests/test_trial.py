"""One trial in-process: a warm teacher cache changes nothing but the time."""

from __future__ import annotations

from pathlib import Path

import torch

from autorank import inventory
from autorank.config import load_space, space_from_dict
from autorank.data import get_data
from autorank.metrics import count_flops, count_params
from autorank.models import get_model, get_model_spec
from autorank.sweep import trial as trial_module
from autorank.sweep.space import build_space
from autorank.sweep.trial import TrialContext, run_trial


def test_a_trial_with_the_cached_teacher_equals_a_cold_one(tiny_checkpoint: Path,
                                                             tmp_path: Path) -> None:
    spec = get_model_spec("tiny_cnn")
    data = get_data("digits", val_source="train", seed=0, mean=spec.mean, std=spec.std)
    model = get_model("tiny_cnn", checkpoint=tiny_checkpoint, num_classes=data.num_classes)
    cfg = space_from_dict({"finetune": {"steps": 8, "batch_size": 32}}, base=load_space("tiny"))
    space = build_space(model, inventory(model, (1, *data.input_shape)), cfg)
    shape = (1, *data.input_shape)

    def context(key: str) -> TrialContext:
        return TrialContext(key=key, model_name="tiny_cnn", num_classes=data.num_classes,
                            input_size=data.input_shape[-1], baseline_state=model.state_dict(),
                            baseline_params=count_params(model),
                            baseline_flops=count_flops(model, shape), data=data, space=space,
                            weights_dir=str(tmp_path / key))

    params = space.seed_params(0.5)
    cold = run_trial(context("cold"), 0, params)
    warm_ctx = context("warm")
    run_trial(warm_ctx, 1, space.seed_params(0.2))  # fills the cache
    warm = run_trial(warm_ctx, 0, params)
    assert trial_module._BASELINES["warm"].hits == 8  # the teacher never ran in this trial
    assert not cold.failed and not warm.failed
    assert cold.val_accuracy == warm.val_accuracy and cold.plan == warm.plan
    a, b = (torch.load(tmp_path / k / "trial-0.pt", weights_only=True) for k in ("cold", "warm"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
