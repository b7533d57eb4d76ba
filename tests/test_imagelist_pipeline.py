"""The whole pipeline end to end on a synthetic image list (ImageNet-LT format), on the CPU:
decoding into the store, subsets.profile: given, every experiment, the tables."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers.imagelist_data import make_image_lists
from helpers.repo import copy_repo, snakemake

pytestmark = pytest.mark.integration

# The demo preset, read from an image list: stored at 20 px, trained on 16-px crops, and fewer
# epochs (the point is that every rule runs on this data source, not what it learns).
OVERRIDES = {
    "dataset": {"name": "imagelist", "root": "data/lt", "train_list": "data/lt/lists/train_lt.txt",
                "test_list": "data/lt/lists/test.txt", "extra_train_list": "data/lt/lists/extra.txt",
                "class_names": "data/lt/lists/classes.txt", "store_size": 20, "image_size": 16},
    "subsets": {"profile": "given"},
    # Every kind of method on this source (a baseline, a ViT with prototypes, SwAV's Sinkhorn); the
    # demo itself runs all nine.
    "methods": ["simsiam", "simclr", "pmsn", "swav"],
    "pretrain": {"epochs": 5, "batch_size": 64, "checkpoint_every": 2, "knn_every": 2},
    "simsiam": {"warmup_epochs": 1}, "simclr": {"warmup_epochs": 1},
    "msn": {"warmup_epochs": 1}, "pmsn": {"warmup_epochs": 1},
    "clustering": {"subsets": ["imbalanced-given"], "base_epochs": 2, "expert_epochs": 2, "distill_epochs": 1,
                   "distill": {"warmup_epochs": 0}},
    "prior_figure": {"subset": "imbalanced-given"},
    "evaluation": {"epochs": 5},
}


def test_an_image_list_runs_every_experiment(tmp_path):
    copy_repo(tmp_path)
    make_image_lists(tmp_path / "data" / "lt")
    (tmp_path / "lt.yaml").write_text(yaml.safe_dump(OVERRIDES))
    done = snakemake(tmp_path, "--cores", "2", "--configfile", "config/demo.yaml", "lt.yaml", timeout=3600)
    assert done.returncode == 0, done.stderr[-6000:]
    assert (tmp_path / "results/data/train.images.npy").exists() and (tmp_path / "results/data/test.images.npy").exists()
    table2 = (tmp_path / "results/tables/table2.md").read_text()
    for subset in ("imbalanced-given", "balanced-given", "full"):
        assert f"| {subset} |" in table2, subset
    assert "| imbalanced-given |" in (tmp_path / "results/tables/table3.md").read_text()
    for method in OVERRIDES["methods"]:
        result = json.loads((tmp_path / f"results/eval/imbalanced-given/{method}/seed0.json").read_text())
        assert result["n"] == 197 and len(result["per_class"]) == 10
        assert result["train_class_counts"] == [60, 42, 30, 21, 15, 10, 7, 5, 4, 3]
    assert snakemake(tmp_path, "-n", "--configfile", "config/demo.yaml", "lt.yaml").stdout.count("Nothing to be done") == 1
