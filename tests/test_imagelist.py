"""Image-list datasets (ImageNet-LT format): decoding into the store, the one-line errors,
subsets.profile: given, the config checks, and the ImageNet-LT preset's plan."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from imbssl import UserError
from imbssl.data.store import _resize_centre_crop, load_split

from helpers.data import prepare_dataset
from helpers.repo import copy_workflow
from imbssl.data.subsets import balanced_counts, build_subsets

from helpers.imagelist_data import PER_CLASS, TEST_PER_CLASS, TRAIN_LT, colour, make_image_lists

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagelist")
    return root, make_image_lists(root)


def _prepare(root, lists, out, **kw):
    args = dict(store_size=24, image_size=20, train_list=lists["train_lt"], test_list=lists["test"],
                extra_train_list=lists["extra"], class_names=lists["class_names"], workers=1)
    prepare_dataset("imagelist", root, out / "train.npz", out / "test.npz", **{**args, **kw})
    return load_split(out / "train.npz"), load_split(out / "test.npz")


@pytest.fixture(scope="module")
def prepared(lists, tmp_path_factory):
    root, files = lists
    return _prepare(root, files, tmp_path_factory.mktemp("store"))


def test_the_store_is_memory_mapped_uint8_at_store_size_with_the_lists_labels(prepared, lists):
    train, test = prepared
    assert isinstance(train.images, np.memmap) and train.images.dtype == np.uint8
    assert train.images.shape == (10 * PER_CLASS, 24, 24, 3) and test.images.shape == (10 * TEST_PER_CLASS, 24, 24, 3)
    assert train.image_size == 20 and train.store_size == 24
    assert train.classes == [f"class_{c}" for c in range(10)]
    # The train list's images first (in list order), then the extra list's.
    assert train.listed.tolist() == [True] * sum(TRAIN_LT) + [False] * (10 * PER_CLASS - sum(TRAIN_LT))
    assert np.bincount(train.labels[train.listed]).tolist() == TRAIN_LT
    assert np.bincount(train.labels).tolist() == [PER_CLASS] * 10
    # Pixels and labels line up: every stored image has its class's colour.
    for images, labels in ((train.images, train.labels), (test.images, test.labels)):
        means = images.reshape(len(images), -1, 3).mean(1)
        assert np.abs(means - np.stack([colour(y) for y in labels])).max() < 4


@pytest.mark.parametrize("size", [(333, 200), (200, 333), (47, 31), (24, 24), (100, 24)])
def test_an_image_is_resized_on_its_shorter_side_then_centre_cropped_as_torchvision_does(size):
    from torchvision import transforms

    pixels = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    expected = transforms.Compose([transforms.Resize(24), transforms.CenterCrop(24)])(image)
    assert np.array_equal(_resize_centre_crop(image, 24), np.asarray(expected))


def test_the_store_holds_each_listed_image_resized_and_cropped(prepared, lists):
    root, files = lists
    train, _ = prepared
    relative = files["train_lt"].read_text().splitlines()[1].rsplit(" ", 1)[0]
    with Image.open(root / relative) as im:
        expected = _resize_centre_crop(im.convert("RGB"), 24)
    # JPEG draft mode may decode at a reduced scale first: equal up to rounding of a few levels.
    assert np.abs(train.images[1].astype(int) - expected.astype(int)).mean() < 2


def test_parallel_decoding_writes_the_same_store(lists, tmp_path):
    root, files = lists
    one = _prepare(root, files, tmp_path / "one", workers=1)[0]
    two = _prepare(root, files, tmp_path / "two", workers=2)[0]
    assert np.array_equal(one.images, two.images) and np.array_equal(one.labels, two.labels)


def _fails(root, files, out, **kw):
    with pytest.raises(UserError) as err:
        _prepare(root, files, out, **kw)
    assert "\n" not in str(err.value)
    assert not out.exists() or not any(out.iterdir()), "a failed prepare wrote files"
    return str(err.value)


def test_missing_images_are_all_named_capped_before_anything_is_written(lists, tmp_path):
    root, files = lists
    bad = tmp_path / "bad.txt"
    bad.write_text(files["train_lt"].read_text() + "".join(f"train/nowhere/{i}.jpg 0\n" for i in range(23)))
    message = _fails(root, files, tmp_path / "out", train_list=bad)
    assert "23 image(s) named in the list files do not exist" in message
    assert "train/nowhere/0.jpg" in message and "train/nowhere/19.jpg" in message
    assert "train/nowhere/20.jpg" not in message and "and 3 more" in message


def test_an_unreadable_image_is_named(lists, tmp_path):
    root, files = lists
    broken = root / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    bad = tmp_path / "bad.txt"
    bad.write_text(files["train_lt"].read_text() + "broken.jpg 3\n")
    message = _fails(root, files, tmp_path / "out", train_list=bad)
    assert "1 problem(s)" in message and "broken.jpg (" in message
    broken.unlink()


def test_malformed_lines_and_unknown_test_labels_are_one_line_errors(lists, tmp_path):
    root, files = lists
    bad = tmp_path / "bad.txt"
    bad.write_text("train/class_0/0000.jpg 0\ntrain/class_0/0001.jpg zero\n")
    assert "line 2: expected 'relative/path.jpg label'" in _fails(root, files, tmp_path / "o1", train_list=bad)
    test = tmp_path / "test.txt"
    test.write_text("val/class_0/0000.jpg 12\n")
    assert "labels the train list lacks (12)" in _fails(root, files, tmp_path / "o2", test_list=test)
    assert "dataset.name=imagelist needs dataset.test_list" in _fails(root, files, tmp_path / "o3", test_list=None)


def test_an_extra_list_that_relabels_a_train_list_image_is_named(lists, tmp_path):
    root, files = lists
    first_path, first_label = files["train_lt"].read_text().splitlines()[0].rsplit(" ", 1)
    extra = tmp_path / "extra.txt"
    extra.write_text(files["extra"].read_text() + f"{first_path} {int(first_label) + 1}\n")
    message = _fails(root, files, tmp_path / "out", extra_train_list=extra)
    assert "labels 1 image(s) of dataset.train_list=" in message
    assert f"{first_path} ({first_label} vs {int(first_label) + 1})" in message
    # The same image with the same label in both lists is fine, and stored once.
    extra.write_text(files["extra"].read_text() + f"{first_path} {first_label}\n")
    train, _ = _prepare(root, files, tmp_path / "same", extra_train_list=extra)
    assert len(train.labels) == 10 * PER_CLASS


def test_profile_given_takes_the_train_list_and_draws_its_balanced_twin(prepared):
    train, _ = prepared
    subsets = build_subsets(train.labels, 10, [10], seed=0, profile="given", listed=train.listed)
    assert list(subsets) == ["imbalanced-given", "balanced-given", "full"]
    assert np.array_equal(subsets["imbalanced-given"], np.flatnonzero(train.listed))
    balanced = subsets["balanced-given"]
    assert len(set(balanced)) == len(balanced) == sum(TRAIN_LT) == 197
    assert np.bincount(train.labels[balanced]).tolist() == balanced_counts(197, [PER_CLASS] * 10)  # 20 x 7, 19 x 3
    assert len(subsets["full"]) == 10 * PER_CLASS


def test_profile_given_without_enough_images_says_which_class_and_what_it_needs(lists, tmp_path):
    root, files = lists
    train, _ = _prepare(root, files, tmp_path / "lt", extra_train_list=None)
    with pytest.raises(UserError) as err:
        build_subsets(train.labels, 10, [10], seed=0, profile="given", listed=train.listed)
    # 197 images over 10 classes need 20 of the first 7 and 19 of the rest; class 9 has 3.
    assert str(err.value).startswith("subsets.profile: given: the balanced twin of the train list (197 images")
    assert "needs 19 images of every class, but 6 classes have fewer stored (class 9: 3)" in str(err.value)
    assert "dataset.extra_train_list" in str(err.value)


# --- config checks before any job, and the ImageNet-LT preset's plan ------------------------------

def _config(**sections):
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"), set_default=True)
    return config


@pytest.mark.parametrize(("dataset", "subsets", "expected"), [
    ({"name": "imagelist"}, {}, "dataset.name: imagelist needs dataset.train_list"),
    ({"name": "imagelist", "train_list": "nowhere.txt", "test_list": "nowhere.txt"}, {},
     "dataset.train_list: nowhere.txt does not exist"),
    ({"name": "cifar10"}, {"profile": "given"}, "subsets.profile: given takes the train split as it is"),
    ({"name": "folder", "store_size": 32, "image_size": 64}, {}, "dataset.image_size=64 > dataset.store_size=32"),
])
def test_dataset_settings_no_job_can_run_are_config_errors(dataset, subsets, expected):
    from imbssl.config_check import plan_error

    message = plan_error(_config(dataset=dataset, subsets=subsets))
    assert message.startswith("config error:") and expected in message and "\n" not in message


def test_an_impossible_balanced_twin_is_a_config_error(lists):
    from imbssl.config_check import plan_error

    _, files = lists
    dataset = {"name": "imagelist", "train_list": str(files["train_lt"]), "test_list": str(files["test"]),
               "store_size": 32}  # stored square, as the default test view (resize_crop) needs
    config = _config(dataset=dataset, subsets={"profile": "given"}, clustering={"subsets": ["imbalanced-given"]},
                     prior_figure={"subset": "imbalanced-given"})
    assert "(class 9: 3)" in plan_error(config)
    config["dataset"]["extra_train_list"] = str(files["extra"])
    config["analysis"] = {"groups": "thirds", "head_above": 100, "tail_below": 20}
    assert plan_error(config) is None


def _lt_counts(classes=1000, head=1280, tail=5):
    """ImageNet-LT-shaped counts: exponential from 1,280 to 5 images per class."""
    return [int(head * (tail / head) ** (c / (classes - 1))) for c in range(classes)]


def test_the_imagenet_lt_preset_plans_every_experiment(tmp_path):
    copy_workflow(tmp_path)
    lists = tmp_path / "data" / "imagenet"
    lists.mkdir(parents=True)
    counts = _lt_counts()
    lt = [f"train/n{c:08d}/{i}.JPEG {c}" for c, n in enumerate(counts) for i in range(n)]
    full = [f"train/n{c:08d}/{i}.JPEG {c}" for c in range(1000) for i in range(300)]
    (lists / "ImageNet_LT_train.txt").write_text("\n".join(lt) + "\n")
    (lists / "ImageNet_train_full.txt").write_text("\n".join(full) + "\n")
    (lists / "ImageNet_LT_test.txt").write_text("".join(f"val/{c}.JPEG {c}\n" for c in range(1000)))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--configfile",
                             "config/imagenet-lt.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    counts = {parts[0]: int(parts[1]) for parts in map(str.split, result.stdout.splitlines())
              if len(parts) == 2 and parts[1].isdigit()}
    preset = yaml.safe_load((REPO / "config/imagenet-lt.yaml").read_text())
    k = yaml.safe_load((REPO / "config.yaml").read_text())["clustering"]["k"]
    from imbssl.methods import catalog

    # every method of config.yaml on imbalanced-given, balanced-given, full; the prior measured on
    # the first two (the prototype usage of the methods with prototypes there)
    methods = yaml.safe_load((REPO / "config.yaml").read_text())["methods"]
    subsets, prototype_methods = 3, len(catalog.prototype_methods(methods))
    methods = len(methods)
    assert preset["clustering"]["subsets"] == ["imbalanced-given"]
    expected = {"prepare_data": 1, "subsets": subsets, "pretrain": methods * subsets,
                # every model once, plus the two students of Experiment II on imbalanced-given
                "evaluate": methods * subsets + 2,
                "base": 1, "features": 1, "cluster": 1, "partition_random": 1, "expert": 2 * k, "distill": 2,
                "prototype_usage": 2 * prototype_methods, "cluster_sizes": 2 * methods,
                "training_curves": subsets, "stage_curves": 1}
    assert {rule: counts.get(rule) for rule in expected} == expected
    # No balanced twin without the extra list: the preset stops before any job, naming the fix.
    (lists / "ImageNet_train_full.txt").unlink()
    stopped = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/imagenet-lt.yaml"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert stopped.returncode != 0 and "dataset.extra_train_list: data/imagenet/ImageNet_train_full.txt does not exist" \
        in stopped.stderr
