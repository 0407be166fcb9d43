"""One trial in-process: a warm teacher cache changes nothing but the time."""

from __future__ import annotations

import copy
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
    seen: list[int] = []

    class Steps:  # a bench's look inside the fine-tune
        def after_step(self, step: int) -> None:
            seen.append(step)

    trial_module.train_and_measure(warm_ctx, copy.deepcopy(model), hook=Steps())
    assert seen == list(range(8))


def test_a_promoted_trial_continues_from_its_own_weights(tiny_checkpoint: Path,
                                                          tmp_path: Path) -> None:
    """Rung 1 loads the weights rung 0 saved and trains only the rung's extra steps: the same
    weights as continuing by hand, and not those of starting over."""
    import dataclasses

    from autorank.config import Fidelity
    from autorank.decompose import apply_plan
    from autorank.engine import recover

    spec = get_model_spec("tiny_cnn")
    data = get_data("digits", val_source="train", seed=0, mean=spec.mean, std=spec.std)
    model = get_model("tiny_cnn", checkpoint=tiny_checkpoint, num_classes=data.num_classes)
    cfg = space_from_dict({"finetune": {"batch_size": 32}, "fidelity": {
        "min_steps": 4, "max_steps": 12, "eta": 3}}, base=load_space("tiny"))
    assert cfg.fidelity == Fidelity(4, 12, 3)
    space = build_space(model, inventory(model, (1, *data.input_shape)), cfg)
    shape = (1, *data.input_shape)
    ctx = TrialContext(key="rungs", model_name="tiny_cnn", num_classes=data.num_classes,
                       input_size=data.input_shape[-1], baseline_state=model.state_dict(),
                       baseline_params=count_params(model), baseline_flops=count_flops(model, shape),
                       data=data, space=space, weights_dir=str(tmp_path / "w"))
    params = space.seed_params(0.5)
    first = run_trial(ctx, 0, params)
    assert (first.rung, first.steps) == (0, 4)
    after_first = torch.load(tmp_path / "w" / "trial-0.pt", weights_only=True)
    by_hand = apply_plan(model, space.plan(params))
    by_hand.load_state_dict(after_first)
    recover(by_hand, data, trial_module.recipe(ctx, 1), teacher=model)
    assert trial_module.recipe(ctx, 1).steps == 8 and trial_module.recipe(ctx, 1).bn_batches == 0
    second = run_trial(ctx, 0, params, rung=1)
    assert (second.rung, second.steps) == (1, 12) and not second.failed
    promoted = torch.load(tmp_path / "w" / "trial-0.pt", weights_only=True)
    assert all(torch.equal(promoted[k], v) for k, v in by_hand.state_dict().items())
    fresh = dataclasses.replace(ctx, key="fresh", weights_dir=str(tmp_path / "none"))
    restarted = run_trial(fresh, 0, params, rung=1)  # no weights to continue from: 12 steps anew
    assert restarted.steps == 12 and restarted.plan == second.plan
    started_over = torch.load(tmp_path / "none" / "trial-0.pt", weights_only=True)
    assert not all(torch.equal(started_over[k], promoted[k]) for k in promoted)
