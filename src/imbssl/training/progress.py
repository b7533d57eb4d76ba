"""Progress of a training job: a live bar per epoch on a terminal, one plain line per epoch in a log
file. Both show the loss, the learning rate, images/s and the kNN monitor; neither changes a result.

Rank 0 of a job on several processes reports for all; the other ranks show nothing.
"""

from __future__ import annotations

import datetime
import sys
import time

from tqdm import tqdm

from imbssl.core import distributed


class BarProgress:
    """A bar per epoch, for a person watching a terminal. It moves with every step and shows the
    images done, images/s, the running loss (every `log_every` steps, when the loop syncs with the
    device anyway), the learning rate and the last kNN monitor accuracy; when the epoch ends it
    shows the epoch's mean loss and images/s and stays on screen as that epoch's line."""

    RUNNING = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} img [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
    DONE = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} img [{elapsed}{postfix}]"

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, start_epoch: int, batch_size: int = 1):
        self.name, self.epochs, self.steps_per_epoch, self.batch_size = name, epochs, steps_per_epoch, batch_size
        self.epoch_number = start_epoch + 1  # the epoch under way (1-based, as in the logs)
        self.bar: tqdm | None = None
        self.shown = 0  # steps of this epoch on the bar
        self.loss: str | None = None
        self.knn: str | None = None  # the last kNN accuracy measured, and when

    def _open(self) -> tqdm:
        if self.bar is None:
            self.bar = tqdm(total=self.steps_per_epoch * self.batch_size, desc=f"{self.name} epoch "
                            f"{self.epoch_number}/{self.epochs}", unit="img", file=sys.stderr,
                            mininterval=0.5, leave=True, ascii=True, dynamic_ncols=True, bar_format=self.RUNNING)
            self.shown = 0
        return self.bar

    def _postfix(self, lr: float, images_per_s: float | None = None) -> dict[str, str]:
        values = {"loss": self.loss, "lr": f"{lr:.4g}",
                  "img/s": None if images_per_s is None else f"{images_per_s:.0f}", "knn": self.knn}
        return {key: value for key, value in values.items() if value is not None}

    def steps(self, done_in_epoch: int, lr: float, running_loss: float | None = None) -> None:
        bar = self._open()
        if running_loss is not None:
            self.loss = f"{running_loss:.4f}"
        bar.set_postfix(self._postfix(lr), refresh=False)
        bar.update((done_in_epoch - self.shown) * self.batch_size)
        self.shown = done_in_epoch

    def epoch(self, row: dict) -> None:
        bar = self._open()
        bar.update((self.steps_per_epoch - self.shown) * self.batch_size)
        self.loss = f"{row['loss']:.4f}"  # the epoch's mean
        if "knn_top1" in row:
            self.knn = f"{row['knn_top1']:.2f}% (epoch {row['epoch']})"
        bar.bar_format = self.DONE  # the epoch's own images/s, not the bar's (which counts the kNN time)
        bar.set_postfix(self._postfix(row["lr"], row["images_per_s"]), refresh=True)
        bar.close()
        self.bar, self.loss = None, None
        self.epoch_number = row["epoch"] + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class LineProgress:
    """One plain line per epoch, for job logs (Snakemake's log files, SLURM's output files), where
    a bar's carriage returns would make a whole run one unreadable line."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, start_epoch: int, batch_size: int = 1):
        self.name, self.epochs, self.start_epoch = name, epochs, start_epoch
        self.started = time.perf_counter()

    def steps(self, done_in_epoch: int, lr: float, running_loss: float | None = None) -> None:
        pass

    def epoch(self, row: dict) -> None:
        elapsed = time.perf_counter() - self.started
        done = row["epoch"] - self.start_epoch  # epochs run by this process (a resume starts later)
        eta = elapsed / done * (self.epochs - row["epoch"])
        knn = f" knn_top1 {row['knn_top1']:.2f}" if "knn_top1" in row else ""
        print(f"[imbssl] {self.name} epoch {row['epoch']}/{self.epochs} loss {row['loss']:.4f} lr {row['lr']:.4g}"
              f"{knn} images/s {row['images_per_s']:.0f} elapsed {_clock(elapsed)} eta {_clock(eta)}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class NoProgress:
    """Ranks other than 0 of a job on several processes: rank 0 reports for all."""

    def __init__(self, *args, **kwargs):
        pass

    def steps(self, done_in_epoch: int, lr: float, running_loss: float | None = None) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(name: str, epochs: int, steps_per_epoch: int, start_epoch: int, batch_size: int = 1):
    kind = NoProgress if not distributed.is_main() else BarProgress if sys.stderr.isatty() else LineProgress
    return kind(name, epochs, steps_per_epoch, start_epoch, batch_size)
