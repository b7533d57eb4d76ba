"""A full disk (or an exhausted quota) stops a job with one line naming the file, its file system
and the fix, never a writer's traceback; the image store is measured before it is decoded.

Unit level: writers raising what a full disk makes them raise. As root: a real tmpfs of a few
hundred KiB under a training job (skipped where mounting is not allowed)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imbssl import UserError
from imbssl.core import atomic, checkpoint
from imbssl.core.atomic import atomic_path, write_text

TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 967616 vs 967504"  # torch.save's


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_write_that_runs_out_of_space_is_one_line_naming_the_file_and_its_file_system(tmp_path):
    target = tmp_path / "results" / "metrics.csv"
    with pytest.raises(UserError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"no space left writing {target}: its file system {atomic.mount_point(tmp_path)} has ")
    assert " free of " in message and "free space there" in message and "rerun the same command" in message
    assert leftovers(target.parent) == []  # no temporary file, no partial result


def test_torch_saves_full_disk_error_is_told_by_the_free_space_left(tmp_path, monkeypatch):
    """torch.save into a full file system raises a RuntimeError without errno: after the failed
    write, the file system is full (checked before the partial file is removed)."""
    def failing_save(obj, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError(TORCH_FULL_DISK)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    monkeypatch.setattr(atomic, "disk_space", lambda directory: (4096, 4 << 20))
    with pytest.raises(UserError, match=r"^no space left writing .*checkpoint\.pt: .* has 4\.0 KiB free of 4\.0 MiB"):
        checkpoint.save({"epoch": 1}, tmp_path / "checkpoint.pt")
    assert leftovers(tmp_path) == []
    # The same error with room left is another problem: it is not called a full disk.
    monkeypatch.setattr(atomic, "disk_space", lambda directory: (10 << 30, 100 << 30))
    with pytest.raises(RuntimeError, match="enforce fail"):
        checkpoint.save({"epoch": 1}, tmp_path / "checkpoint.pt")


def test_an_exhausted_quota_says_quota(tmp_path):
    with pytest.raises(UserError, match=r"^disk quota exceeded writing .*a\.txt \(file system /.*\): free space in "
                                        r"your quota"):
        with atomic_path(tmp_path / "a.txt"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")


def test_other_failures_pass_through_unchanged(tmp_path):
    with pytest.raises(ValueError, match="bad value"):
        with atomic_path(tmp_path / "a.txt"):
            raise ValueError("bad value")
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "b.txt"):
            raise PermissionError(errno.EACCES, "Permission denied")


def test_the_mount_point_is_the_file_system_to_free(tmp_path):
    assert atomic.mount_point(tmp_path / "not" / "yet" / "there.csv") == atomic.mount_point(tmp_path)
    assert os.path.ismount(atomic.mount_point(tmp_path))
    assert atomic.human_bytes(235 * 2**30) == "235.0 GiB" and atomic.human_bytes(512) == "512 B"


# --- a real small file system (root) ---------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path):
    """A 256 KiB tmpfs at tmp_path/small (root only; skipped where mounts are refused)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    done = subprocess.run(["umount", str(mount)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_torch_save_into_a_full_tmpfs_keeps_the_last_checkpoint_and_says_so(tiny_fs):
    path = tiny_fs / "run" / "checkpoint.pt"
    checkpoint.save({"weights": torch.zeros(1000)}, path)
    with pytest.raises(UserError, match=rf"^no space left writing {path}: its file system {tiny_fs} has "):
        checkpoint.save({"weights": torch.zeros(200_000)}, path)  # 800 KB into 256 KiB
    # The partial file's space is back at once (torch's writer kept it open), for the log's line
    assert atomic.disk_space(tiny_fs)[0] > 200 << 10
    assert torch.equal(checkpoint.load(path)["weights"], torch.zeros(1000))  # the previous one, whole
    assert leftovers(path.parent) == ["checkpoint.pt"]
    with pytest.raises(UserError, match="^no space left writing"):
        write_text(tiny_fs / "big.txt", "x" * 400_000)  # a plain Python write: ENOSPC itself


def test_a_training_job_that_fills_its_disk_ends_with_the_one_line_error(digits_data, tiny_fs):
    train, test, subsets = digits_data
    out = tiny_fs / "pretrain"
    command = [sys.executable, "-m", "imbssl.cli", "pretrain", "--method", "simsiam", "--train-data", str(train),
               "--test-data", str(test), "--subset", str(subsets / "imbalanced-p100.csv"), "--out-dir", str(out),
               "--epochs", "3", "--batch-size", "32", "--checkpoint-every", "1", "--knn-every", "0",
               "--arch", "resnet10", "--width", "64", "--proj-dim", "64", "--pred-hidden-dim", "16", "--warmup-epochs", "0", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"imbssl: error: no space left writing {out}/") and f"its file system {tiny_fs} " in last
    assert "Traceback" not in done.stderr and "enforce fail" not in done.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# --- the image store is measured before it is decoded ------------------------------------------


def test_prepare_data_stops_before_decoding_a_store_that_does_not_fit(tmp_path, monkeypatch):
    from PIL import Image

    from imbssl.data import store

    root = tmp_path / "images"
    for split, count in (("train", 5), ("test", 3)):
        (root / split / "a").mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / split / "a" / f"{i}.png")
    monkeypatch.setattr(atomic, "disk_space", lambda directory: (1000, 1 << 30))
    monkeypatch.setattr(store, "decode_to_store", lambda *a, **k: pytest.fail("decoded although it cannot fit"))
    out = tmp_path / "results" / "data"
    with pytest.raises(UserError) as err:
        store.prepare(store.DatasetSettings(name="folder", root=str(root), store_size=16), out / "train.npz",
                      out / "test.npz")
    needed = 8 * 16 * 16 * 3  # 8 images stored at 16 x 16 px, uint8 RGB
    message = str(err.value)
    assert "\n" not in message
    assert f"the image store (8 images of 16x16 px) needs 6.0 KiB ({needed} bytes) under {out}" in message
    assert "has 1000 B (1000 bytes) free" in message and "dataset.store_size" in message
    assert not out.exists() or leftovers(out) == []
