"""What `snakemake --report` shows, from the result files it shows: the overview on the report's
landing page, and the check that the config given to `--report` is the one they were made with.

The report's captions are rendered from the config Snakemake is given, but its tables and figures
come from the files on disk: results made with another config (the demo's, say, reported under
the paper's defaults) would be described as another experiment. So, before anything is built:

- `config_mismatch` compares, for every result file the report would show, the settings this
  config gives its evaluate job and the training job of its model (the rules' params, by flag
  name) and the dataset's name with what the file's provenance records (the evaluate job records
  its model's provenance too, evaluation/evaluate.py), and names what differs in one line;
- `overview_rst` writes the landing page's account of the run from that provenance: dataset,
  subsets, seeds, backbones, epochs, evaluation, and the imbssl and git commit that made it.

No torch: the Snakefile calls this at parse time (`snakemake --report` only).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from imbssl import UserError
from imbssl.core.artifacts import EvalResult, read_result
from imbssl.core.atomic import write_text
from imbssl.data.subsets import order_subsets, subset_kind_and_factor

# Mismatches named in the one line; the rest are counted. What tells one experiment from another
# is named first: the dataset, then the backbone and the training budget.
SHOWN_MISMATCHES = 6
HEADLINE = ("dataset:", "training --arch:", "training --width:", "training --epochs:", "training --batch-size:",
            "evaluate --epochs:")


# ---------------------------------------------------------------------------------------------
# Is `--report` running?


def report_mode(argv: Sequence[str]) -> str | None:
    """"report" for `snakemake --report FILE` (the results are already on disk), "after-run" for
    `--report-after-run` (the run makes them first), None otherwise. Read from the command line:
    Snakemake parses the Snakefile before it tells the workflow what it will do."""
    asked = any(arg == "--report" or arg.startswith("--report=") for arg in argv)
    if not asked:
        return None
    return "after-run" if "--report-after-run" in argv else "report"


# ---------------------------------------------------------------------------------------------
# The config against the results


@dataclass(frozen=True)
class Expected:
    """What this config says made one result file: the dataset, the settings of its evaluate job
    and those its model was trained with (each by its flag's name, e.g. `batch_size`)."""

    dataset: str
    evaluation: Mapping[str, Any]
    training: Mapping[str, Any]


def _same(recorded: Any, configured: Any) -> bool:
    """One setting as the job parsed it vs as the config gives it: numbers by value (30 == 30.0),
    lists item by item, everything else by its text (booleans too)."""
    if isinstance(recorded, (list, tuple)) or isinstance(configured, (list, tuple)):
        recorded = list(recorded) if isinstance(recorded, (list, tuple)) else [recorded]
        configured = list(configured) if isinstance(configured, (list, tuple)) else [configured]
        return len(recorded) == len(configured) and all(map(_same, recorded, configured))
    numbers = (int, float)
    if (isinstance(recorded, numbers) and isinstance(configured, numbers)
            and not isinstance(recorded, bool) and not isinstance(configured, bool)):
        return float(recorded) == float(configured)
    return str(recorded).lower() == str(configured).lower()


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_shown, value)) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _flag_mismatches(job: str, recorded: Mapping[str, Any], configured: Mapping[str, Any]) -> list[str]:
    """The flags that the config sets (None: the command's default) and the job recorded otherwise."""
    return [f"{job} --{key.replace('_', '-')}: {_shown(recorded[key])} in the results, {_shown(value)} in this config"
            for key, value in configured.items()
            if value is not None and key in recorded and not _same(recorded[key], value)]


def trained_settings(result: EvalResult) -> dict[str, Any]:
    """The flags the evaluated model was trained with (empty for results from before the evaluate
    job recorded its model's provenance)."""
    model = result.provenance.get("model") or {}
    return dict((model.get("provenance") or {}).get("settings") or {})


def result_mismatches(result: EvalResult, expected: Expected) -> list[str]:
    """How one result file's recorded settings differ from what this config says made it."""
    evaluated = result.provenance.get("settings") or {}
    found = []
    dataset = evaluated.get("dataset_name")
    if dataset is not None and dataset != expected.dataset:
        found.append(f"dataset: {dataset} in the results, {expected.dataset} in this config")
    trained = trained_settings(result)
    if not trained and result.pretrain_epochs is not None:
        trained = {"epochs": result.pretrain_epochs}  # all that older result files say of training
    found += _flag_mismatches("training", trained, expected.training)
    found += _flag_mismatches("evaluate", evaluated, expected.evaluation)
    return found


def config_mismatch(expected_by_file: Mapping[str, Expected]) -> str | None:
    """One line naming how the result files on disk differ from this config, or None when every
    existing one matches it (missing files are Snakemake's to report)."""
    mismatches: dict[str, list[str]] = {}  # what differs -> the files where it does
    checked = 0
    for path, expected in expected_by_file.items():
        if not Path(path).exists():
            continue
        checked += 1
        try:
            result = read_result(path)
        except UserError as err:
            return f"snakemake --report: {err}"
        for mismatch in result_mismatches(result, expected):
            mismatches.setdefault(mismatch, []).append(path)
    if not mismatches:
        return None
    files = sorted({path for paths in mismatches.values() for path in paths})
    ranked = sorted(mismatches, key=lambda text: next((i for i, head in enumerate(HEADLINE)
                                                       if text.startswith(head)), len(HEADLINE)))
    shown = ranked[:SHOWN_MISMATCHES]
    more = f"; and {len(mismatches) - len(shown)} more" if len(mismatches) > len(shown) else ""
    return (f"snakemake --report: this config does not describe the results it would report ({len(files)} of "
            f"{checked} result files differ, e.g. {files[0]}): " + "; ".join(shown) + more +
            ". Report with the config the results were made with (the same --configfile and --config), or rerun "
            "them under this one first (snakemake without --report)")


# ---------------------------------------------------------------------------------------------
# The overview of the run, from the result files


def read_results(paths: Iterable[str | os.PathLike]) -> list[EvalResult]:
    """The result files that exist and can be read. One that cannot has stopped `--report` already
    (config_mismatch); before `--report-after-run` its evaluate job is about to rewrite it."""
    results = []
    for path in paths:
        try:
            results.append(read_result(path))
        except UserError:
            continue
    return results


def _rst(text: Any) -> str:
    """Plain text in reStructuredText: the characters that would start markup escaped."""
    return re.sub(r"([\\`*_|])", r"\\\1", str(text))


def backbone_name(arch: str | None, width: int | None) -> str:
    """resnet18 (64) -> ResNet-18 (width 64); other backbones by their config name."""
    if not arch:
        return "backbone not recorded"
    match = re.fullmatch(r"resnet(\d+)", arch)
    name = f"ResNet-{match.group(1)}" if match else arch
    return f"{name} (width {width})" if match and width else name


def _commits(results: Sequence[EvalResult]) -> str:
    """The imbssl versions and git commits that made the results and their models."""
    made: dict[str, set[str]] = {}  # version -> commits
    for result in results:
        for provenance in (result.provenance, result.provenance.get("model", {}).get("provenance") or {}):
            if provenance.get("imbssl_version"):
                made.setdefault(provenance["imbssl_version"], set()).add(provenance.get("git_commit") or "")
    if not made:
        return "imbssl version not recorded"

    def commit(text: str) -> str:
        dirty = " with uncommitted changes" if text.endswith("+dirty") else ""
        return f"``{text.removesuffix('+dirty')[:10]}``{dirty}"

    parts = []
    for version, commits in sorted(made.items()):
        known = sorted(c for c in commits if c)
        where = "" if not known else f" at commit {commit(known[0])}" if len(known) == 1 else \
            " at commits " + ", ".join(map(commit, known))
        parts.append(f"imbssl {_rst(version)}{where}")
    return "; ".join(parts)


def _training(result: EvalResult) -> str:
    """How one result's model was trained, in a few words."""
    model = result.provenance.get("model") or {}
    settings = trained_settings(result)
    epochs = model.get("epochs", result.pretrain_epochs)
    if (model.get("provenance") or {}).get("command") == "distill":
        teachers = len(settings.get("experts") or [])
        return (f"distilled for {epochs} epochs from a base model and {teachers} experts (k = {teachers})"
                + (f", batch {settings['batch_size']}" if "batch_size" in settings else ""))
    words = [backbone_name(model.get("arch"), model.get("width")), f"{epochs} epochs"]
    if "batch_size" in settings:
        words.append(f"batch {settings['batch_size']}")
    if "num_prototypes" in settings:
        words.append(f"{settings['num_prototypes']} prototypes")
    if settings.get("prior") == "powerlaw" and "tau" in settings:
        words.append(f"power-law prior τ = {_shown(settings['tau'])}")
    return ", ".join(words)


def _evaluation(results: Sequence[EvalResult]) -> str:
    protocols = []
    for result in results:
        settings = result.settings
        how = "on augmented images through the frozen backbone" if settings.get("augment") else \
            "on precomputed features"
        text = f"linear probe trained for {settings.get('epochs')} epochs {how}; kNN with k = {settings.get('knn_k')}"
        if text not in protocols:
            protocols.append(text)
    return "; ".join(protocols)


def _subsets(results: Sequence[EvalResult]) -> str:
    sizes = {}
    for result in results:
        sizes.setdefault(result.subset, result.n)
    parts = [f"{_rst(subset)} ({sizes[subset]:,})" for subset in order_subsets(sizes)]
    factors = sorted({int(factor[1:]) for subset in sizes for kind, factor in [subset_kind_and_factor(subset)]
                      if re.fullmatch(r"p\d+", factor)})
    text = ", ".join(parts)
    if factors:
        text += "; imbalance factor" + ("s " if len(factors) > 1 else " ") + ", ".join(map(str, factors))
    return text


def _dataset(results: Sequence[EvalResult]) -> str:
    first = results[0]
    name = (first.provenance.get("settings") or {}).get("dataset_name") or "dataset name not recorded"
    classes = first.classes
    listed = ", ".join(classes) if len(classes) <= 10 else ", ".join(classes[:5]) + ", …"
    size = (first.provenance.get("model") or {}).get("image_size")
    crops = f", {size} px crops" if size else ""
    return f"{_rst(name)}: {len(classes)} classes ({_rst(listed)}){crops}; test split of {first.test_n:,} images"


def _methods(results: Sequence[EvalResult]) -> list[str]:
    """One line per way of training, with the methods trained that way (in the order of the results)."""
    by_training: dict[str, list[str]] = {}
    for result in results:
        methods = by_training.setdefault(_training(result), [])
        if result.method not in methods:
            methods.append(result.method)
    return [f"{_rst(', '.join(methods))}: {_rst(training)}" for training, methods in by_training.items()]


def overview_rst(results: Sequence[EvalResult], where: str = "results/eval") -> str:
    """The landing page's account of the run the report shows, from its result files alone."""
    if not results:
        return ("**The run shown here**: no result files yet. Run the workflow (``snakemake --cores all``) "
                "before building its report.\n")
    seeds = sorted({int(result.seed) for result in results})
    one_seed = " (one seed: the tables' std is 0, no spread measured)" if len(seeds) == 1 else ""
    lines = [
        f"**The run shown here**, from the provenance of its {len(results)} result files "
        f"(``{where}``), made by {_commits(results)}:",
        "",
        f"- **Dataset**: {_dataset(results)}",
        f"- **Subsets** (pretraining images N): {_subsets(results)}",
        f"- **Seeds**: {', '.join(map(str, seeds))}{one_seed}",
        "- **Pretraining**:",
        "",
        *(f"  - {line}" for line in _methods(results)),
        "",
        f"- **Evaluation**: {_evaluation(results)}",
    ]
    return "\n".join(lines) + "\n"


def write_report_text(result_files: Iterable[str | os.PathLike], description: str | os.PathLike,
                      out: str | os.PathLike) -> Path:
    """The report's landing text: the overview of the run from its result files, then the
    workflow's `description` (a Jinja template Snakemake renders; the overview is kept verbatim)."""
    overview = overview_rst(read_results(result_files))
    text = "{% raw %}\n" + overview + "{% endraw %}\n\n" + Path(description).read_text()
    write_text(out, text)
    return Path(out).resolve()
