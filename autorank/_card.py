"""The model card (``README.md``) of an export directory, from what ``export.json`` holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .types import Plan


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f} %"


def _accuracy_rows(info: Mapping[str, Any]) -> list[str]:
    base = info["baseline"]
    rows = [f"| test accuracy | {_pct(base.get('test_accuracy'))} | {_pct(info['test_accuracy'])} |"]
    if info.get("accuracy_after") is not None:
        rows.append(f"| test accuracy right after factorization | | {_pct(info['accuracy_after'])} |")
    if info.get("test_accuracy_trial") is not None:
        label = ("the search trial's own weights" if info.get("strategy")
                 else f"before the {info['finetune_epochs']:g}-epoch fine-tune")
        rows.append(f"| test accuracy of {label} | | {_pct(info['test_accuracy_trial'])} |")
    if info.get("val_accuracy_search") is not None:
        rows.append(f"| validation accuracy (as the search judged it) | "
                    f"{_pct(base.get('val_accuracy'))} | {_pct(info['val_accuracy_search'])} |")
    return rows


def _cost_rows(info: Mapping[str, Any]) -> list[str]:
    base, shape = info["baseline"], "x".join(str(d) for d in [1, *info["input_shape"]])
    flops_ratio = info.get("flops_ratio")
    return [
        f"| parameters | {base['params']:,} | {info['params']:,} (ratio {info['params_ratio']:.2f}x) |",
        f"| FLOPs at {shape} (multiply-add = 2) | {base['flops']:,} | {info['flops']:,} "
        f"(ratio {flops_ratio:.2f}x) |" if flops_ratio
        else f"| FLOPs | {base['flops']:,} | {info['flops']:,} |",
        f"| latency at batch 1 | {base['latency_ms']:.3f} ms | {info['latency_ms']:.3f} ms |",
        f"| latency at batch {info['latency_batch']} | {base['latency_batch_ms']:.3f} ms | "
        f"{info['latency_batch_ms']:.3f} ms |",
        *_deployed_rows(info.get("deployed_latency") or {}),
    ]


def _deployed_rows(deployed: Mapping[str, Any]) -> list[str]:
    """Latency as deployed (BatchNorm folded, factors merged), per backend and batch."""
    rows = []
    for key, ms in deployed.items():
        if key == "deploy_error":
            continue
        backend, _, batch = key.partition("_batch_")
        how = "deployed" if "deploy_error" not in deployed else "not deployable, as is"
        rows.append(f"| latency at batch {batch}, {how}, {backend} | {ms['baseline']:.3f} ms | "
                    f"{ms['model']:.3f} ms ({ms['baseline'] / ms['model']:.2f}x) |")
    return rows


def _plan_rows(plan: Plan) -> list[str]:
    rows = ["| layer | method | rank |", "|---|---|---|"]
    rows += [f"| `{name}` | {c.method} | {str(c).removeprefix(c.method).strip() if c.rank else '-'} |"
             for name, c in sorted(plan.items())]
    return rows


def _stage_rows(stages: Sequence[tuple[Plan, bool]]) -> list[str]:
    if len(stages) == 1 and not stages[0][1]:
        return _plan_rows(stages[0][0])
    rows: list[str] = []
    for number, (plan, fuse) in enumerate(stages, 1):
        how = (" (over the factors of stage 1; new outer 1x1 factors multiplied into their "
               "neighbours)" if fuse else "")
        rows += [f"Stage {number}{how}:", "", *_plan_rows(plan), ""]
    return rows


def _origin(info: Mapping[str, Any]) -> tuple[str, str]:
    """The card's title and the sentence that says where the model comes from."""
    name = f"{info['model_name']} on {info['dataset']}"
    strategy = info.get("strategy")
    if info.get("trial") is None:
        return f"{name}, {strategy}", f"Made by `autorank compress --strategy {strategy}`."
    how = (f" Its plan was trained again from the dense baseline by the `{strategy}` recipe "
           f"({info['finetune_epochs']:g} epoch(s) of fine-tune)." if strategy else "")
    return f"{name}, trial {info['trial']}", f"Exported from the run `{info['run']}`.{how}"


def _usage(info: Mapping[str, Any]) -> list[str]:
    lines = [
        "```python", "import autorank as ar", "", 'model = ar.load_exported("THIS_DIRECTORY")',
        f"logits = model(x)  # x: N x {' x '.join(str(d) for d in info['input_shape'])}, normalised",
        "```", "",
        f"Inputs are images scaled to [0, 1], then normalised per channel with mean "
        f"{tuple(round(m, 4) for m in info['mean'])} and std {tuple(round(s, 4) for s in info['std'])}.",
        "The model is plain torch: each factorized layer is an `nn.Sequential` of `nn.Conv2d`/"
        "`nn.Linear`, so `torch.export` and ONNX need no autorank at inference time. "
        "`load_exported` rebuilds it from the model registry, `plan.json` and the layout in "
        "`export.json`, then loads `model.safetensors`.",
    ]
    onnx = info.get("onnx")
    if onnx:
        lines += ["", f"`model.onnx` (input `input`, output `logits`, dynamic batch): onnxruntime's "
                  f"logits match torch's within {onnx['atol']:g} + {onnx['rtol']:g} x |logit| "
                  f"(largest difference measured at export: {onnx['max_abs_diff']:.2g})."]
    return lines


def model_card(info: Mapping[str, Any], plan: Plan,
               stages: Sequence[tuple[Plan, bool]] | None = None) -> str:
    """A Markdown model card: accuracy and cost against the baseline, how to load, the plan.

    ``stages`` (plan, fused) replace the plan table for a multi-stage strategy's model.
    """
    stages = list(stages) if stages else [(plan, False)]
    factorized = sum(1 for c in stages[0][0].values() if c.method != "keep")
    split = ("the half of the test split not used for validation"
             if info.get("val_source") == "test" else "the test split")
    title, origin = _origin(info)
    lines = [
        f"# {title}", "",
        f"Compressed with autorank: {factorized} layer(s) factorized (plan below). {origin}", "",
        "| | baseline | this model |", "|---|---|---|",
        *_accuracy_rows(info), *_cost_rows(info), "",
        f"Test accuracy is on {info['test_images']:,} images ({split}). Ratios are baseline / "
        f"this model. Latency is the median of timed forward passes on the machine that exported, "
        f"with {info['threads']} torch thread(s), torch {info['torch']}.", "",
        "## Load it", "", *_usage(info), "",
        "## Plan", "", *_stage_rows(stages), "",
    ]
    return "\n".join(lines)
