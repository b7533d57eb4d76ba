"""Where data meets the device: which device a job runs on, and uint8 images handed to it.

A job's images are an image source, one of two kinds that hand out the same uint8 NCHW batches:
- `ResidentImages`: the whole subset on the device (one upload; a batch is an index op);
- `StreamedImages`: rows gathered from the memory-mapped store (data.py) into pinned host
  buffers by a background thread, copied to the device on a side stream while the previous step
  runs, so the device never waits for the host when the host keeps up.
`pretrain.data_on_device` (auto | true | false) picks one; auto keeps a subset resident when it
fits in `pretrain.device_memory_fraction` of the device's memory (`choose_resident`).
"""

from __future__ import annotations

import os
import queue
import threading
import warnings
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from imbssl import UserError

PLACEMENTS = ("auto", "true", "false")
PREFETCH = 3  # batches a streamed source gathers and uploads ahead of the step that uses them


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = the GPU when one is visible, else the CPU; `cuda` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA device is visible: set device: auto or cpu")
    return torch.device(name)


def _host_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over `array`'s memory; a read-only memory-mapped store is fine: torch warns that it
    could write to it, and nothing here ever does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def to_device_images(images_nhwc: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor on `device` (kept as uint8: 4x less memory than float).
    The result is always a copy, so a read-only store is fine."""
    return _host_tensor(np.ascontiguousarray(images_nhwc)).to(device).permute(0, 3, 1, 2).contiguous()


def images_bytes(store: np.ndarray, count: int) -> int:
    """Bytes of `count` images of a uint8 (N, H, W, 3) store: what a resident source would take."""
    return count * int(np.prod(store.shape[1:]))


def device_memory_bytes(device: torch.device) -> int:
    """The memory a resident subset competes for: the GPU's, or the host's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_resident(setting: str, nbytes: int, device: torch.device, fraction: float) -> bool:
    """True to keep `nbytes` of images on the device, False to stream them (`data_on_device`)."""
    if setting not in PLACEMENTS:
        raise UserError(f"pretrain.data_on_device={setting!r}: use auto, true or false")
    if not 0 < fraction <= 1:
        raise UserError(f"pretrain.device_memory_fraction={fraction}: use a fraction in (0, 1]")
    if setting != "auto":
        return setting == "true"
    return nbytes <= fraction * device_memory_bytes(device)


class ResidentImages:
    """uint8 NCHW images already on the device; `source[index]` is one index op."""

    resident = True

    def __init__(self, images: torch.Tensor):
        self.images = images

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]

    def rows(self, positions: Sequence[int] | slice) -> "ResidentImages":
        return ResidentImages(self.images[positions])

    def batches(self, indices: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        return (self.images[index] for index in indices)

    def chunks(self, batch_size: int) -> Iterator[torch.Tensor]:
        return (self.images[start:start + batch_size] for start in range(0, len(self), batch_size))


class StreamedImages:
    """Rows `rows` of a uint8 NHWC store (a memory-mapped .npy) streamed to `device` in batches.

    `source[index]` gathers and uploads one batch synchronously; `batches(indices)` and `chunks`
    prefetch: a background thread gathers each batch into a pinned buffer with torch's
    index_select (which releases the GIL) and starts its copy on a side CUDA stream, PREFETCH
    batches ahead of the consumer, who waits only on that batch's copy (an event), never on the
    host. The batches are the same bytes the resident source would give.
    """

    resident = False

    def __init__(self, store: np.ndarray | torch.Tensor, rows, device: torch.device):
        self.store = _host_tensor(store) if isinstance(store, np.ndarray) else store
        self.row_index = torch.as_tensor(rows, dtype=torch.int64)
        self.device = device
        self.pinned = device.type == "cuda"

    def __len__(self) -> int:
        return int(self.row_index.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.store.shape[1:]
        return (channels, height, width)

    def rows(self, positions: Sequence[int] | slice) -> "StreamedImages":
        return StreamedImages(self.store, self.row_index[positions], self.device)

    def _gather(self, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 NHWC host rows of the subset positions `index` (into `out` when given)."""
        rows = self.row_index[index.cpu()]
        if out is None:
            return torch.index_select(self.store, 0, rows)
        return torch.index_select(self.store, 0, rows, out=out[:len(rows)])

    def _on_device(self, host: torch.Tensor) -> torch.Tensor:
        return host.to(self.device, non_blocking=self.pinned).permute(0, 3, 1, 2).contiguous()

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self._on_device(self._gather(index))

    def chunks(self, batch_size: int) -> Iterator[torch.Tensor]:
        return self.batches(torch.arange(start, min(start + batch_size, len(self)))
                            for start in range(0, len(self), batch_size))

    def batches(self, indices: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        if not self.pinned:
            return self._host_batches(indices)
        return self._cuda_batches(indices)

    def _host_batches(self, indices: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """On the CPU the gathered rows are the batch: a thread gathers the next ones meanwhile."""
        for host in _prefetched(lambda index: self._gather(index), indices):
            yield host.permute(0, 3, 1, 2).contiguous()

    def _cuda_batches(self, indices: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        indices = list(indices)
        if not indices:
            return
        # The epoch's indices to the host in one copy, here: a .cpu() per batch in the worker
        # would wait for every step queued on the GPU before it, and the prefetch would stall.
        indices = torch.cat(indices).cpu().split([len(index) for index in indices])
        largest = max(len(index) for index in indices)
        buffers = [torch.empty((largest, *self.store.shape[1:]), dtype=torch.uint8).pin_memory()
                   for _ in range(PREFETCH + 1)]
        copied = [None] * len(buffers)  # the event of each buffer's last copy: reuse only after it
        side = torch.cuda.Stream(self.device)

        def upload(step_index: tuple[int, torch.Tensor]):
            step, index = step_index
            slot = step % len(buffers)
            if copied[slot] is not None:
                copied[slot].synchronize()
            host = self._gather(index, buffers[slot])
            with torch.cuda.stream(side):
                batch = host.to(self.device, non_blocking=True)
                done = torch.cuda.Event()
                done.record(side)
            copied[slot] = done
            return batch, done

        current = torch.cuda.current_stream(self.device)
        for batch, done in _prefetched(upload, enumerate(indices)):
            current.wait_event(done)
            batch.record_stream(current)  # allocated on the side stream, used on this one
            yield batch.permute(0, 3, 1, 2).contiguous()


def _prefetched(make, items: Iterable, depth: int = PREFETCH) -> Iterator:
    """make(item) for each item, computed by a background thread up to `depth` items ahead;
    an exception in the thread is raised in the consumer."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def work():
        try:
            for item in items:
                if stop.is_set():
                    return
                results.put((make(item), None))
        except BaseException as err:  # handed to the consumer
            results.put((None, err))
        results.put((finished, None))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            value, err = results.get()
            if err is not None:
                raise err
            if value is finished:
                return
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                results.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def as_source(images) -> ResidentImages | StreamedImages:
    """A uint8 NCHW tensor becomes a resident source; a source stays as it is."""
    return ResidentImages(images) if isinstance(images, torch.Tensor) else images


def image_source(store: np.ndarray, rows: np.ndarray, device: torch.device, resident: bool):
    """Rows `rows` of a store on `device`: uploaded whole, or streamed."""
    if resident:
        return ResidentImages(to_device_images(store[rows], device))
    return StreamedImages(store, rows, device)
