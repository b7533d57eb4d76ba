import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need a CUDA device: skipped without one (`pytest -m gpu` on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory):
    """The demo's digits dataset, cached once per test session: (train.npz, test.npz, subsets dir)."""
    from imbssl.data.store import DatasetSettings, prepare
    from imbssl.data.subsets import SubsetSettings, write_all

    root = tmp_path_factory.mktemp("digits")
    prepare(DatasetSettings("digits", str(root), image_size=16), root / "train.npz", root / "test.npz")
    write_all(root / "train.npz", root / "subsets", SubsetSettings([10.0, 100.0], seed=0))
    return root / "train.npz", root / "test.npz", root / "subsets"


@pytest.fixture
def rng():
    return np.random.default_rng(0)
