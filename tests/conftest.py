import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory):
    """The demo's digits dataset, cached once per test session: (train.npz, test.npz, subsets dir)."""
    from imbssl.data.store import prepare
    from imbssl.data.subsets import write_all

    root = tmp_path_factory.mktemp("digits")
    prepare("digits", root, root / "train.npz", root / "test.npz", image_size=16)
    write_all(root / "train.npz", [10, 100], seed=0, out_dir=root / "subsets")
    return root / "train.npz", root / "test.npz", root / "subsets"


@pytest.fixture
def rng():
    return np.random.default_rng(0)
