"""The dense model a search or a strategy starts from, and the data split it is judged on."""

from __future__ import annotations

import dataclasses
import logging
import os

from torch import nn

from .data import DataBundle

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """Which baseline to load (or train first) and which images to use."""

    model: str
    dataset: str
    checkpoint: str | None = None  # None: a baseline is trained first (cached)
    data_dir: str | None = None  # default $AUTORANK_DATA_DIR
    val_source: str = "auto"  # auto: half the test set for a checkpoint, else from train
    seed: int = 0
    baseline_epochs: int = 30
    input_size: int = 32
    device: str = "cpu"
    val_size: int | float | None = None  # None: the data set's default
    download: bool = False  # let torchvision fetch CIFAR when it is not found
    progress: bool = False  # show the baseline training's progress bar


def resolve_val_source(val_source: str, checkpoint: str | None) -> str:
    """``auto``: a checkpoint of unknown training data is validated on a seeded half of the
    test set (the other half reports); a baseline trained here on a split carved from train."""
    if val_source != "auto":
        return val_source
    return "test" if checkpoint else "train"


def load_baseline(spec: BaselineSpec) -> tuple[nn.Module, DataBundle]:
    """The trained dense model (in eval mode) and its data.

    Images the model cannot take are refused before a baseline is trained.

    Raises:
        UserError: unknown model or data set, missing data, images the model cannot take, a
            checkpoint that does not fit.
    """
    from .data import get_data
    from .engine import train_baseline
    from .models import check_input_shape, get_model, get_model_spec, load_checkpoint, load_weights

    model_spec = get_model_spec(spec.model)
    data_dir = spec.data_dir or os.environ.get("AUTORANK_DATA_DIR")
    data = get_data(spec.dataset, data_dir=data_dir,
                    val_source=resolve_val_source(spec.val_source, spec.checkpoint),
                    val_size=spec.val_size, seed=spec.seed, mean=model_spec.mean,
                    std=model_spec.std, download=spec.download)
    model = get_model(spec.model, num_classes=data.num_classes, input_size=spec.input_size)
    check_input_shape(model, data.input_shape, name=f"model {spec.model!r}")
    checkpoint = spec.checkpoint
    if checkpoint is None:
        log.info("no checkpoint: training a %s baseline for %d epochs (cached)", spec.model,
                 spec.baseline_epochs)
        checkpoint = str(train_baseline(spec.model, spec.dataset, epochs=spec.baseline_epochs,
                                        seed=spec.seed, data_dir=data_dir, device=spec.device,
                                        progress=spec.progress))
    load_weights(model, load_checkpoint(checkpoint), source=checkpoint)
    return model.eval(), data
