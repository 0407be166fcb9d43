"""The four registries share one shape: duplicates refused, unknown names answered with the list."""

from __future__ import annotations

import pytest

import autorank as ar
from autorank.data import list_datasets, register_dataset
from autorank.decompose import get_method
from autorank.decompose._registry import register_method
from autorank.errors import UserError
from autorank.models import get_model, list_models, register_model
from autorank.strategies import get_strategy, list_strategies, register_strategy


def test_duplicates_are_refused() -> None:
    method = type(get_method("svd"))
    with pytest.raises(ValueError, match="method 'svd' is already registered"):
        register_method(method)
    with pytest.raises(ValueError, match="model 'tiny_cnn' is already registered"):
        register_model("tiny_cnn", family="tiny")(lambda **kw: None)
    with pytest.raises(ValueError, match="data set 'digits' is already registered"):
        register_dataset("digits")(lambda *a, **kw: None)
    with pytest.raises(ValueError, match="strategy 'musco' is already registered"):
        register_strategy("musco")(lambda ctx: None)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'svd2'; expected one of \['cp'"):
        get_method("svd2")
    with pytest.raises(UserError, match="unknown model 'resnet7'; expected one of"):
        get_model("resnet7")
    with pytest.raises(UserError, match=r"unknown data set 'mnist:x'; expected one of"):
        ar.data.get_data("mnist:x")
    with pytest.raises(ValueError, match=r"unknown strategy 'x'; expected one of \['admm'"):
        get_strategy("x")
    assert list_models() == sorted(list_models()) and "tiny_cnn" in list_models()
    assert "digits" in list_datasets() and list_strategies() == ["admm", "musco", "vbmf-tucker2"]
