"""Shared fixtures: tiny but real settings and data (shrunk sizes, never fakes)."""
from __future__ import annotations

import copy

import pytest

from xaibench import config
from xaibench.data import prepare

TINY = {
    "datasets": ["shapes"],
    "data": {"image_size": 32, "shapes": {"n_train": 96, "n_val": 32, "n_test": 48, "n_ood": 16, "n_pairs": 16}},
    "train": {"seeds": [0, 1], "width": 8, "epochs": 2, "batch_size": 32},
    "explain": {"batch_size": 32},
}


@pytest.fixture
def tiny_cfg() -> dict:
    return config.validate(copy.deepcopy(TINY))


@pytest.fixture
def tiny_project(tmp_path, monkeypatch, tiny_cfg):
    """A working directory with tiny prepared `shapes` data, as `xaibench prepare` leaves it."""
    monkeypatch.chdir(tmp_path)
    prepare("shapes", tiny_cfg["data"], tmp_path / "data/prepared/shapes")
    return tmp_path
