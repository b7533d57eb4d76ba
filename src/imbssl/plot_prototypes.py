"""Figure: prototype usage of MSN and PMSN, sorted, on log-log axes, against each model's prior.

Reads the usage JSON files written by `prototypes.write_usage` only (no torch, no model), so
re-plotting is instant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import UserError

METHOD_LABELS = {"msn": "MSN", "pmsn": "PMSN"}


def prior_counts(prior: str, tau: float, num_prototypes: int, num_images: int) -> np.ndarray:
    """Images per prototype the prior expects, sorted from the most used: N * p_k."""
    if prior == "uniform":
        p = np.full(num_prototypes, 1.0 / num_prototypes)
    elif prior == "powerlaw":
        p = np.arange(1, num_prototypes + 1, dtype=float) ** -tau
        p /= p.sum()
    else:
        raise UserError(f"unknown prior {prior!r} in a prototype-usage file: expected uniform or powerlaw")
    return num_images * p


def sorted_usage(counts: list[int]) -> np.ndarray:
    """Counts from the most used prototype down; unused prototypes (0) cannot sit on a log axis."""
    values = np.sort(np.asarray(counts, dtype=float))[::-1]
    return values[values > 0]


def read_usage(path: str | os.PathLike) -> dict:
    try:
        usage = json.loads(Path(path).read_text())
        usage["counts"]  # noqa: B018  (a usage file must have them)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path} is not a prototype-usage file ({type(err).__name__}): rerun the rule "
                        f"that writes it") from err
    return usage


def figure_prototype_usage(usage_paths: list[str], out: list[str], title: str = "", settings=None) -> None:
    """One log-log panel: each model's sorted usage (solid) and its prior's expectation (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import PlotSettings, save_figure

    settings = settings or PlotSettings()
    with plt.style.context(settings.style), plt.rc_context({"font.size": settings.font_size}):
        fig, ax = plt.subplots(figsize=(settings.width, settings.height))
        for i, path in enumerate(usage_paths):
            usage = read_usage(path)
            color = f"C{i}"
            label = METHOD_LABELS.get(usage.get("method"), usage.get("method", Path(path).stem))
            used = sorted_usage(usage["counts"])
            ax.loglog(np.arange(1, len(used) + 1), used, color=color, lw=1.8,
                      label=f"{label} ({len(used)}/{usage['num_prototypes']} used)")
            expected = prior_counts(usage["prior"], usage["tau"], usage["num_prototypes"], usage["num_images"])
            prior_name = "uniform" if usage["prior"] == "uniform" else f"power law, tau={usage['tau']:g}"
            ax.loglog(np.arange(1, len(expected) + 1), expected, color=color, ls="--", lw=1.0,
                      label=f"{label} prior ({prior_name})")
        ax.set_xlabel("prototype rank (most used first)")
        ax.set_ylabel("images won")
        if title:
            ax.set_title(title)
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        save_figure(fig, out, settings.dpi)
