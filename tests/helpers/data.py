"""Prepared datasets for tests, through the prepare-data job's own function."""

from __future__ import annotations

from imbssl.data.store import DatasetSettings, prepare


def prepare_dataset(name, root, out_train, out_test, workers=None, **settings):
    """`prepare` with the dataset settings as keywords (as the `dataset` config section gives them)."""
    prepare(DatasetSettings(name=name, root=str(root), **settings), out_train, out_test, workers=workers)
