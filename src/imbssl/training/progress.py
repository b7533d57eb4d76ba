"""Progress of a training job: a live bar on a terminal, one plain line per epoch in a log file.

Rank 0 of a job on several processes reports for all; the other ranks show nothing.
"""

from __future__ import annotations

import datetime
import sys
import time

from tqdm import tqdm

from imbssl.core import distributed


class BarProgress:
    """tqdm's bar, for a person watching a terminal (updated every `log_every` steps)."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, start_epoch: int):
        self.steps_per_epoch = steps_per_epoch
        self.bar = tqdm(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, file=sys.stderr,
                        desc=name, unit="step", mininterval=5, dynamic_ncols=False, ascii=True)
        self.shown = 0

    def steps(self, done_in_epoch: int, running_loss: float) -> None:
        self.bar.set_postfix(loss=f"{running_loss:.4f}", refresh=False)
        self.bar.update(done_in_epoch - self.shown)
        self.shown = done_in_epoch

    def epoch(self, row: dict) -> None:
        self.bar.update(self.steps_per_epoch - self.shown)
        self.shown = 0
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class LineProgress:
    """One plain line per epoch, for job logs (Snakemake's log files, SLURM's output files), where
    a bar's carriage returns would make a whole run one unreadable line."""

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, start_epoch: int):
        self.name, self.epochs, self.start_epoch = name, epochs, start_epoch
        self.started = time.perf_counter()

    def steps(self, done_in_epoch: int, running_loss: float) -> None:
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

    def __init__(self, *args):
        pass

    def steps(self, done_in_epoch: int, running_loss: float) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(name: str, epochs: int, steps_per_epoch: int, start_epoch: int):
    kind = NoProgress if not distributed.is_main() else BarProgress if sys.stderr.isatty() else LineProgress
    return kind(name, epochs, steps_per_epoch, start_epoch)
