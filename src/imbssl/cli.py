"""The `imbssl` command line: argument parsing only, one function call per command.

Every Snakemake rule runs one of these commands; each is usable on its own too
(`imbssl <command> --help`). A command's settings flags come from its settings dataclasses
(`settings.add_flags`); the file flags (inputs, outputs) are declared here. Each command names
the module that does its work: the code hash of that module's imports is the rule's `code` param
and is recorded, with every flag the command ran with, as the provenance of the files it writes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from imbssl import Stopped, UserError
from imbssl.methods import catalog
from imbssl.settings import add_flags, code_hash, from_args, parse_bool


@dataclass(frozen=True)
class Command:
    help: str
    module: str  # the module that does the work (its imports are the command's code)
    add_args: Callable[[argparse.ArgumentParser, list[str]], None]
    run: Callable[[argparse.Namespace], object]


def command_code_hash(command: str, method: str | None = None) -> str:
    """The code hash of a command (with a method, also of that method's module): what the rule's
    `code` param carries and what the files it writes record."""
    entries = [COMMANDS[command].module]
    if method is not None:
        entries.append(f"imbssl.methods.{catalog.method_info(method).module}")
    return code_hash(*entries)


def _provenance(args: argparse.Namespace) -> dict:
    from imbssl.core.artifacts import provenance

    settings = {key: value for key, value in vars(args).items() if key not in ("func", "command")}
    method = getattr(args, "method", None) if args.command == "pretrain" else None
    return provenance(args.command, command_code_hash(args.command, method), settings)


def _peek(argv: list[str], flag: str) -> str | None:
    """A flag's value, needed before parsing (the method's own flags depend on --method)."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _add_method_flags(p: argparse.ArgumentParser, argv: list[str], choices: list[str]) -> None:
    p.add_argument("--method", required=True, choices=choices, help="a method of the catalog")
    method = _peek(argv, "--method")
    if method in choices:
        from imbssl.methods.registry import get_method

        add_flags(p, get_method(method)[1], f"method {method} (its config section)")
    else:
        p.epilog = f"The method's own flags are listed with --method NAME --help (NAME: {', '.join(choices)})."


# --- data --------------------------------------------------------------------------------------


def _args_prepare_data(p, argv):
    from imbssl.data.store import DatasetSettings

    p.add_argument("--out-train", required=True, help="train split .npz (its images beside it, .images.npy)")
    p.add_argument("--out-test", required=True, help="test split .npz")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: the CPUs available)")
    add_flags(p, DatasetSettings, "dataset (config section `dataset`)")


def _cmd_prepare_data(args):
    from imbssl.data.store import DatasetSettings, prepare

    prepare(from_args(DatasetSettings, args), args.out_train, args.out_test, workers=args.workers)


def _args_subsets(p, argv):
    from imbssl.data.subsets import SubsetSettings

    p.add_argument("--train-data", required=True, help="train split .npz from prepare-data")
    p.add_argument("--subset", default=None,
                   help="write only this subset (e.g. imbalanced-p100) to --out; its name gives the factor")
    p.add_argument("--out", default=None, help="the CSV of --subset")
    p.add_argument("--out-dir", default=None, help="without --subset: writes {subset}.csv for every subset")
    add_flags(p, SubsetSettings, "subsets (config section `subsets`)")


def _cmd_subsets(args):
    from imbssl.data.subsets import SubsetSettings, write_all, write_one

    settings = from_args(SubsetSettings, args)
    if args.subset is not None:
        if args.out is None:
            raise UserError("imbssl subsets --subset NAME needs --out FILE")
        write_one(args.train_data, args.subset, args.out, settings)
    elif args.out_dir is not None:
        write_all(args.train_data, args.out_dir, settings)
    else:
        raise UserError("imbssl subsets: give --subset NAME --out FILE, or --out-dir DIR for every subset")


# --- training ----------------------------------------------------------------------------------


def _training_inputs(p):
    p.add_argument("--train-data", required=True, help="train split .npz from prepare-data")
    p.add_argument("--test-data", required=True, help="test split .npz (for kNN monitoring only)")
    p.add_argument("--subset", required=True, help="subset CSV (index,label) of the images to train on")
    p.add_argument("--out-dir", required=True, help="writes model.pt, metrics.csv (checkpoint.pt while running)")
    p.add_argument("--seed", type=int, default=0, help="initial weights, shuffling and augmentations")


def _args_pretrain(p, argv):
    from imbssl.data.augment import AugmentConfig
    from imbssl.models.backbones import ModelConfig
    from imbssl.training.loop import StageSchedule, TrainSettings

    _training_inputs(p)
    p.add_argument("--init", default=None, help="model.pt to start from (experts start from the base model)")
    p.add_argument("--init-heads", type=parse_bool, default=True, metavar="BOOL",
                   help="with --init, also copy the method's heads (not only the backbone)")
    _add_method_flags(p, argv, list(catalog.METHODS))
    add_flags(p, TrainSettings, "training (config section `pretrain`)")
    add_flags(p, StageSchedule, "a stage of a longer schedule (Experiment II, clustering.schedule)")
    add_flags(p, ModelConfig, "model (config section `model`, or the method's `model`)")
    add_flags(p, AugmentConfig, "augmentation (config section `augment`)")


def _cmd_pretrain(args):
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods.registry import get_method
    from imbssl.models.backbones import ModelConfig
    from imbssl.training.loop import StageSchedule, TrainSettings
    from imbssl.training.pretrain import pretrain

    return pretrain(method=args.method, method_config=from_args(get_method(args.method)[1], args),
                    train_data=args.train_data, test_data=args.test_data, subset=args.subset, out_dir=args.out_dir,
                    seed=args.seed, settings=from_args(TrainSettings, args), model=from_args(ModelConfig, args),
                    augment=from_args(AugmentConfig, args), init=args.init, init_heads=args.init_heads,
                    provenance=args.provenance, stage=from_args(StageSchedule, args))


def _args_distill(p, argv):
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods.distill import DistillConfig
    from imbssl.training.loop import StageSchedule, TrainSettings

    _training_inputs(p)
    p.add_argument("--base", required=True, help="base model.pt")
    p.add_argument("--experts", nargs="+", required=True, help="expert model.pt files, cluster 0 first")
    p.add_argument("--clusters", required=True, help="assignments.csv of the partition the experts used")
    add_flags(p, DistillConfig, "distillation (config section `clustering.distill`)")
    add_flags(p, TrainSettings, "training (config section `pretrain`)")
    add_flags(p, StageSchedule, "a stage of a longer schedule (Experiment II, clustering.schedule)")
    add_flags(p, AugmentConfig, "augmentation (config section `augment`)")


def _cmd_distill(args):
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods.distill import DistillConfig
    from imbssl.training.distill import distill
    from imbssl.training.loop import StageSchedule, TrainSettings

    return distill(args.base, args.experts, args.clusters, args.train_data, args.test_data, args.subset,
                   args.out_dir, args.seed, config=from_args(DistillConfig, args),
                   settings=from_args(TrainSettings, args), augment=from_args(AugmentConfig, args),
                   provenance=args.provenance, stage=from_args(StageSchedule, args))


# --- evaluation and clustering -----------------------------------------------------------------


def _args_evaluate(p, argv):
    from imbssl.evaluation.linear import EvalSettings

    p.add_argument("--model", required=True, help="model.pt of a pretrain or distill job")
    p.add_argument("--train-data", required=True, help="train split .npz from prepare-data")
    p.add_argument("--test-data", required=True, help="test split .npz (top-1 and kNN accuracy)")
    p.add_argument("--eval-subset", required=True, help="balanced subset CSV the linear classifier trains on")
    p.add_argument("--pretrain-subset", required=True, help="subset CSV the model was pretrained on (for N)")
    p.add_argument("--subset-name", required=True, help="the pretraining subset's name, recorded in the result")
    p.add_argument("--method-name", required=True, help="the method's label in tables")
    p.add_argument("--dataset-name", default=None,
                   help="the dataset's name (config dataset.name), recorded in the result's provenance for reports")
    p.add_argument("--seed", type=int, default=0,
                   help="the linear probe's seed (the run's seed, recorded in the result)")
    p.add_argument("--out", required=True, help="the result JSON")
    add_flags(p, EvalSettings, "evaluation (config section `evaluation`)")


def _cmd_evaluate(args):
    from imbssl.evaluation.evaluate import evaluate_checkpoint
    from imbssl.evaluation.linear import EvalSettings

    return evaluate_checkpoint(
        model=args.model, train_data=args.train_data, test_data=args.test_data, eval_subset=args.eval_subset,
        pretrain_subset=args.pretrain_subset, subset_name=args.subset_name, method_name=args.method_name,
        seed=args.seed, out=args.out, settings=from_args(EvalSettings, args), provenance=args.provenance)


def _args_features(p, argv):
    from imbssl.evaluation.features import FeatureOutput, FeatureSettings

    p.add_argument("--model", required=True, help="model.pt whose features to compute (the base model)")
    p.add_argument("--train-data", required=True, help="train split .npz from prepare-data")
    p.add_argument("--subset", required=True, help="subset CSV of the images to compute features of")
    p.add_argument("--out", required=True, help="features.pt: the features and each row's train-split index")
    add_flags(p, FeatureSettings, "features")
    add_flags(p, FeatureOutput, "what k-means sees (clustering.features)")


def _cmd_features(args):
    from imbssl.evaluation.features import FeatureOutput, FeatureSettings, write_features

    write_features(args.model, args.train_data, args.subset, args.out, from_args(FeatureSettings, args),
                   from_args(FeatureOutput, args))


def _partition_args(p):
    p.add_argument("--subset", required=True, help="subset CSV of the images to partition")
    p.add_argument("--train-data", required=True, help="prepared train split (class names of the cluster x class table)")
    p.add_argument("--subset-name", required=True, help="the subset's name, recorded in summary.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the partition, recorded in summary.json")
    p.add_argument("--out-dir", required=True,
                   help="writes assignments.csv, cluster{j}.csv, contingency.csv, summary.json (k-means: pca.csv)")


def _args_cluster(p, argv):
    from imbssl.clustering.kmeans import KMeansSettings

    p.add_argument("--features", required=True, help="features.pt from the features command")
    _partition_args(p)
    add_flags(p, KMeansSettings, "k-means (config section `clustering`)")


def _cmd_cluster(args):
    from imbssl.clustering.kmeans import KMeansSettings
    from imbssl.clustering.partitions import cluster_subset

    cluster_subset(args.features, args.subset, args.out_dir, args.seed, from_args(KMeansSettings, args),
                   args.subset_name, args.train_data)


def _args_partition_random(p, argv):
    p.add_argument("--clusters-dir", required=True, help="k-means output whose cluster sizes to copy")
    _partition_args(p)


def _cmd_partition_random(args):
    from imbssl.clustering.partitions import partition_random_like

    partition_random_like(args.clusters_dir, args.subset, args.out_dir, args.seed, args.subset_name, args.train_data)


def _args_prototype_usage(p, argv):
    p.add_argument("--model", required=True, help="model.pt of a pretrain job of a method with prototypes")
    p.add_argument("--train-data", required=True, help="train split .npz from prepare-data")
    p.add_argument("--subset", required=True, help="subset CSV of the images to measure the usage on")
    p.add_argument("--subset-name", default="", help="the subset's name, recorded in the file")
    p.add_argument("--seed", type=int, default=0, help="the model's training seed, recorded in the file")
    p.add_argument("--out", required=True, help="the prototype-usage JSON")
    p.add_argument("--device", default="auto", help="torch device (auto: the GPU when one is visible, else the CPU)")
    _add_method_flags(p, argv, [name for name, info in catalog.METHODS.items() if info.prototypes])


def _cmd_prototype_usage(args):
    from imbssl.evaluation.prototypes import write_usage
    from imbssl.methods.registry import get_method

    write_usage(args.model, args.train_data, args.subset, args.out, from_args(get_method(args.method)[1], args),
                device=args.device, subset_name=args.subset_name, seed=args.seed)


def _args_cluster_sizes(p, argv):
    from imbssl.clustering.prior import PriorClusterSettings

    p.add_argument("--model", required=True, help="model.pt of a pretrain job")
    p.add_argument("--train-data", required=True, help="train split .npz from prepare-data")
    p.add_argument("--subset", required=True, help="the subset CSV the model was pretrained on")
    p.add_argument("--subset-name", required=True, help="the subset's name, recorded in the file")
    p.add_argument("--method", required=True, help="the model's method (config name), recorded in the file")
    p.add_argument("--seed", type=int, default=0, help="k-means seed (the model's training seed)")
    p.add_argument("--out", required=True, help="the cluster-sizes JSON")
    add_flags(p, PriorClusterSettings, "k-means of the prior measurement (config section `prior_clusters`)")
    from imbssl.evaluation.features import FeatureSettings

    add_flags(p, FeatureSettings, "features")


def _cmd_cluster_sizes(args):
    from imbssl.clustering.prior import PriorClusterSettings, measure_cluster_sizes
    from imbssl.evaluation.features import FeatureSettings

    measure_cluster_sizes(args.model, args.train_data, args.subset, args.subset_name, args.method, args.seed,
                          args.out, from_args(PriorClusterSettings, args), from_args(FeatureSettings, args),
                          provenance=args.provenance)


# --- tables and figures ------------------------------------------------------------------------


def _table_files(p):
    p.add_argument("--out-csv", required=True, help="the table as CSV (long format)")
    p.add_argument("--out-md", required=True, help="the table as Markdown")
    p.add_argument("--out-html", default=None, help="the table as an HTML page (the report shows it inline)")


def _table_outputs(p):
    p.add_argument("--title", default="", help="the table's title, its first paragraph (empty: none)")
    _table_files(p)


def _args_table(p, argv):
    p.add_argument("--results", nargs="+", required=True, help="result JSONs (the evaluate rule's)")
    p.add_argument("--methods", nargs="+", required=True, help="display names, in column order")
    p.add_argument("--difference", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="paired difference A - B of two methods on each subset (repeatable)")
    p.add_argument("--imbalance-gaps", action="store_true",
                   help="paired difference imbalanced-pX - balanced-pX of each method")
    p.add_argument("--out-differences", default=None, help="CSV of the paired differences")
    _table_outputs(p)


def _cmd_table(args):
    from imbssl.reporting.tables import write_table

    write_table(args.results, args.methods, args.out_csv, args.out_md, title=args.title,
                differences=[tuple(pair) for pair in args.difference], imbalance_gaps=args.imbalance_gaps,
                out_differences=args.out_differences, out_html=args.out_html)


def _args_cluster_table(p, argv):
    p.add_argument("--summaries", nargs="+", required=True,
                   help="summary.json of each partition (cluster, partition-random)")
    p.add_argument("--expert-metrics", nargs="+", default=[],
                   help="the experts' metrics.csv, partition by partition in --summaries order, cluster 0 first")
    p.add_argument("--min-expert-steps", type=int, default=50, help="warn about experts that took fewer optimizer steps")
    _table_files(p)


def _cmd_cluster_table(args):
    from imbssl.reporting.tables import write_cluster_table

    write_cluster_table(args.summaries, args.out_csv, args.out_md, args.expert_metrics, args.min_expert_steps,
                        out_html=args.out_html)


def _results_and_subsets(p):
    from imbssl.reporting.analysis import AnalysisSettings

    p.add_argument("--results", nargs="+", required=True, help="result JSONs (the evaluate rule's)")
    p.add_argument("--subsets", nargs="+", required=True,
                   help="subset CSVs: every subset of the results and their imbalanced twins")
    add_flags(p, AnalysisSettings, "analysis (config section `analysis`)")


def _args_group_table(p, argv):
    _results_and_subsets(p)
    p.add_argument("--methods", nargs="+", required=True, help="method labels in column order")
    _table_outputs(p)


def _cmd_group_table(args):
    from imbssl.reporting.analysis import AnalysisSettings
    from imbssl.reporting.per_class import write_group_table

    write_group_table(args.results, args.subsets, args.methods, args.out_csv, args.out_md, args.title,
                      from_args(AnalysisSettings, args), out_html=args.out_html)


def _args_per_class_table(p, argv):
    _results_and_subsets(p)
    _table_files(p)


def _cmd_per_class_table(args):
    from imbssl.reporting.analysis import AnalysisSettings
    from imbssl.reporting.per_class import write_per_class_table

    write_per_class_table(args.results, args.subsets, args.out_csv, args.out_md, from_args(AnalysisSettings, args),
                          out_html=args.out_html)


def _figure_outputs(p):
    from imbssl.reporting.plotting import PlotSettings

    p.add_argument("--title", default="", help="title above the figure, for figures that take one (empty: none)")
    p.add_argument("--out", nargs="+", required=True, help="one file per format (.png, .pdf, .svg)")
    add_flags(p, PlotSettings, "plot (config section `plots`)")


def _args_figure_subsets(p, argv):
    p.add_argument("--subsets", nargs="+", required=True, help="subset CSVs, one line of the figure each")
    p.add_argument("--train-data", required=True, help="prepared train split (its class names label the axis)")
    _figure_outputs(p)


def _cmd_figure_subsets(args):
    from imbssl.reporting.figures import figure_class_distribution
    from imbssl.reporting.plotting import PlotSettings

    figure_class_distribution(args.subsets, args.train_data, args.out, from_args(PlotSettings, args))


def _args_figure_clusters(p, argv):
    p.add_argument("--pca", required=True, help="pca.csv of a k-means partition (2-D projection of the features)")
    p.add_argument("--contingency", required=True, help="contingency.csv of that partition (cluster x class counts)")
    p.add_argument("--summary", default=None, help="its summary.json: the title then reports the subset, NMI and ARI")
    _figure_outputs(p)


def _cmd_figure_clusters(args):
    from imbssl.reporting.figures import figure3
    from imbssl.reporting.plotting import PlotSettings

    figure3(args.pca, args.contingency, args.out, from_args(PlotSettings, args), summary_file=args.summary)


def _args_figure_prototypes(p, argv):
    p.add_argument("--usage", nargs="+", required=True, help="prototype-usage JSON files")
    _figure_outputs(p)


def _cmd_figure_prototypes(args):
    from imbssl.reporting.figures import figure_prototype_usage
    from imbssl.reporting.plotting import PlotSettings

    figure_prototype_usage(args.usage, args.out, args.title, from_args(PlotSettings, args))


def _args_figure_frequency(p, argv):
    _results_and_subsets(p)
    _figure_outputs(p)


def _cmd_figure_frequency(args):
    from imbssl.reporting.analysis import AnalysisSettings
    from imbssl.reporting.frequency import figure_accuracy_vs_frequency
    from imbssl.reporting.plotting import PlotSettings

    figure_accuracy_vs_frequency(args.results, args.subsets, args.out, args.title, from_args(PlotSettings, args),
                                 from_args(AnalysisSettings, args))


def _args_prior_table(p, argv):
    p.add_argument("--clusters", nargs="+", required=True, help="cluster-sizes JSONs")
    p.add_argument("--usage", nargs="*", default=[], help="prototype-usage JSONs of the methods with prototypes")
    _table_outputs(p)


def _cmd_prior_table(args):
    from imbssl.reporting.prior import write_prior_table

    write_prior_table(args.clusters, args.usage, args.out_csv, args.out_md, args.title, args.out_html)


def _args_figure_prior(p, argv):
    p.add_argument("--clusters", nargs="+", required=True, help="cluster-sizes JSONs")
    _figure_outputs(p)


def _cmd_figure_prior(args):
    from imbssl.reporting.plotting import PlotSettings
    from imbssl.reporting.prior import figure_prior_clusters

    figure_prior_clusters(args.clusters, args.out, args.title, from_args(PlotSettings, args))


def _args_figure_imbalance(p, argv):
    _results_and_subsets(p)
    _figure_outputs(p)


def _cmd_figure_imbalance(args):
    from imbssl.reporting.analysis import AnalysisSettings
    from imbssl.reporting.plotting import PlotSettings
    from imbssl.reporting.sweep import figure_accuracy_vs_imbalance

    figure_accuracy_vs_imbalance(args.results, args.subsets, args.out, args.title, from_args(PlotSettings, args),
                                 from_args(AnalysisSettings, args))


def _args_figure_curves(p, argv):
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.csv of each training job")
    p.add_argument("--labels", nargs="+", required=True, help="a name per metrics file (column titles)")
    _figure_outputs(p)


def _cmd_figure_curves(args):
    from imbssl.reporting.curves import figure_training_curves
    from imbssl.reporting.plotting import PlotSettings

    figure_training_curves(args.metrics, args.labels, args.out, args.title, from_args(PlotSettings, args))


def _args_figure_stages(p, argv):
    p.add_argument("--base", required=True, help="the base model's metrics.csv")
    p.add_argument("--kinds", nargs="+", required=True, help="partition kinds, one figure column each")
    p.add_argument("--experts", nargs="+", required=True,
                   help="the experts' metrics.csv, kind by kind in --kinds order, as many per kind")
    p.add_argument("--students", nargs="+", required=True, help="a student's metrics.csv per kind")
    _figure_outputs(p)


def _cmd_figure_stages(args):
    from imbssl.reporting.curves import figure_stage_curves
    from imbssl.reporting.plotting import PlotSettings

    per_kind, extra = divmod(len(args.experts), len(args.kinds))
    if extra:
        raise UserError(f"figure-stages: {len(args.experts)} expert metrics files do not split evenly over "
                        f"{len(args.kinds)} kinds; pass the same number of experts per kind")
    experts = [args.experts[i * per_kind:(i + 1) * per_kind] for i in range(len(args.kinds))]
    figure_stage_curves(args.base, experts, args.students, args.kinds, args.out, args.title,
                        from_args(PlotSettings, args))


# --- tools ---------------------------------------------------------------------------------------


def _args_bench(p, argv):
    from imbssl.bench.engine import BenchSettings

    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--data-paths", type=parse_bool, default=False, metavar="BOOL",
                   help="instead: resident vs streamed vs a JPEG-decoding DataLoader (bench/data_paths.py), with "
                        "--arch, --width, --image-size, --batch-size, --num-images, --workers and the step counts")
    p.add_argument("--store-size", type=int, default=None,
                   help="--data-paths: shorter side of the stored images (default: image_size x 8/7, 256 for 224)")
    add_flags(p, BenchSettings, "benchmark")


def _cmd_bench(args):
    if args.data_paths:
        from imbssl.bench.data_paths import bench_data_paths

        return bench_data_paths(args, args.store_size, args.out)
    from imbssl.bench.engine import BenchSettings, run

    run(from_args(BenchSettings, args), args.out)


def _args_export(p, argv):
    from imbssl.models.export import FORMATS

    p.add_argument("model", help="a model.pt of the pipeline (results/pretrain/<subset>/<method>/seed<seed>/model.pt)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="torchvision / timm: a state dict their model loads with strict=True; "
                        "safetensors: the state dict (torchvision's key names) with the metadata as strings")
    p.add_argument("--out", required=True, help="file to write (e.g. resnet18.pt, backbone.safetensors)")


def _cmd_export(args):
    from imbssl.evaluation.export import export_model

    code = export_model(args.model, args.format, args.out)
    print(f"# Wrote {args.out} ({args.format}). Load it with:\n{code}", end="")


def _args_provenance(p, argv):
    p.add_argument("file", help="a model.pt or a result JSON")


def _cmd_provenance(args):
    import json

    from imbssl.core.artifacts import read_provenance

    print(json.dumps(read_provenance(args.file), indent=2, sort_keys=True))


COMMANDS: dict[str, Command] = {
    "prepare-data": Command("decode a dataset once into the image store", "imbssl.data.store",
                            _args_prepare_data, _cmd_prepare_data),
    "subsets": Command("write imbalanced-pX, balanced-pX and full subset CSVs", "imbssl.data.subsets",
                       _args_subsets, _cmd_subsets),
    "pretrain": Command("self-supervised pretraining of one method on one subset", "imbssl.training.pretrain",
                        _args_pretrain, _cmd_pretrain),
    "evaluate": Command("linear probe + kNN + per-class accuracy of a backbone", "imbssl.evaluation.evaluate",
                        _args_evaluate, _cmd_evaluate),
    "features": Command("backbone features of a subset (for clustering)", "imbssl.evaluation.features",
                        _args_features, _cmd_features),
    "cluster": Command("k-means of a subset's features, with cluster-vs-class metrics", "imbssl.clustering.partitions",
                       _args_cluster, _cmd_cluster),
    "partition-random": Command("random partition with the k-means cluster sizes (+D ablation)",
                                "imbssl.clustering.partitions", _args_partition_random, _cmd_partition_random),
    "distill": Command("distil a base model and per-cluster experts into one student", "imbssl.training.distill",
                       _args_distill, _cmd_distill),
    "prototype-usage": Command("how many images each prototype of a model wins", "imbssl.evaluation.prototypes",
                               _args_prototype_usage, _cmd_prototype_usage),
    "cluster-sizes": Command("k-means (K = classes) of a model's features: the cluster sizes they imply",
                             "imbssl.clustering.prior", _args_cluster_sizes, _cmd_cluster_sizes),
    "table": Command("mean/std over seeds of result JSONs as CSV + Markdown", "imbssl.reporting.tables",
                     _args_table, _cmd_table),
    "cluster-table": Command("cluster sizes and NMI/ARI of every partition", "imbssl.reporting.tables",
                             _args_cluster_table, _cmd_cluster_table),
    "group-table": Command("head/medium/tail, balancedness and worst-class accuracy over seeds",
                           "imbssl.reporting.per_class", _args_group_table, _cmd_group_table),
    "per-class-table": Command("per-class accuracy of every run, with train images and group",
                               "imbssl.reporting.per_class", _args_per_class_table, _cmd_per_class_table),
    "figure-subsets": Command("Figure 1: images per class of every subset", "imbssl.reporting.figures",
                              _args_figure_subsets, _cmd_figure_subsets),
    "figure-clusters": Command("Figure 3: PCA of features by cluster + cluster x class heatmap",
                               "imbssl.reporting.figures", _args_figure_clusters, _cmd_figure_clusters),
    "figure-prototypes": Command("prototype usage vs the prior, log-log", "imbssl.reporting.figures",
                                 _args_figure_prototypes, _cmd_figure_prototypes),
    "figure-frequency": Command("per-class accuracy against the class's training images", "imbssl.reporting.frequency",
                                _args_figure_frequency, _cmd_figure_frequency),
    "prior-table": Command("implied cluster sizes and prototype usage against the class sizes, per method",
                           "imbssl.reporting.prior", _args_prior_table, _cmd_prior_table),
    "figure-prior": Command("sorted cluster sizes of every method against the class sizes", "imbssl.reporting.prior",
                            _args_figure_prior, _cmd_figure_prior),
    "figure-imbalance": Command("top-1 (all, head, medium, tail) against the imbalance factor, with the gap",
                                "imbssl.reporting.sweep", _args_figure_imbalance, _cmd_figure_imbalance),
    "figure-curves": Command("loss, kNN monitor and output std per epoch of training jobs", "imbssl.reporting.curves",
                             _args_figure_curves, _cmd_figure_curves),
    "figure-stages": Command("Experiment II's training curves: base -> experts -> student", "imbssl.reporting.curves",
                             _args_figure_stages, _cmd_figure_stages),
    "bench": Command("training throughput: the engine vs a conventional DataLoader pipeline", "imbssl.bench.engine",
                     _args_bench, _cmd_bench),
    "export": Command("a model.pt's backbone for torchvision, timm or safetensors, with the code that loads it",
                      "imbssl.evaluation.export", _args_export, _cmd_export),
    "provenance": Command("print where a model.pt or result JSON came from (code, settings)",
                          "imbssl.core.artifacts", _args_provenance, _cmd_provenance),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser; only the chosen command's flags are added, so that e.g. `imbssl table` never
    imports torch."""
    parser = argparse.ArgumentParser(prog="imbssl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if name == chosen:
            command.add_args(p, argv)
        p.set_defaults(func=command.run)
    return parser


def _output_paths(args: argparse.Namespace) -> list[Path]:
    """What the command was told to write: the values of its --out* flags (files or folders)."""
    paths = []
    for key, value in vars(args).items():
        if key.startswith("out") and value:
            paths += [Path(v) for v in (value if isinstance(value, list) else [value])]
    return paths


def _changed_since(paths, since: float) -> list[Path]:
    return [p for p in sorted(paths) if p.is_file() and p.stat().st_mtime >= since]


def written_files(args: argparse.Namespace, since: float) -> list[Path]:
    """The files a command wrote: each --out* file, the files changed since it started in each
    --out-dir, then those beside an --out file with its name and another suffix (the .images.npy
    of a prepared split)."""
    outputs = _output_paths(args)
    found: dict[Path, None] = {}
    for path in outputs:
        found.update(dict.fromkeys(_changed_since(path.rglob("*"), since) if path.is_dir()
                                   else [path] if path.is_file() else []))
    for path in outputs:
        if path.is_file():
            found.update(dict.fromkeys(_changed_since(path.parent.glob(f"{path.stem}.*"), since)))
    return list(found)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def report_written(args: argparse.Namespace, since: float) -> None:
    """The end of a job's log says what it wrote (one process of a job on several GPUs says it)."""
    if os.environ.get("RANK", "0") != "0":
        return
    for path in written_files(args, since):
        print(f"[imbssl] {args.command} wrote {path} ({_size(path.stat().st_size)})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    started = time.time() - 1  # file times are coarse on some file systems
    try:
        args = build_parser(argv).parse_args(argv)
        args.provenance = _provenance(args)
        args.func(args)
    except UserError as err:
        print(f"imbssl: error: {err}", file=sys.stderr)
        return 2
    except Stopped:  # the training loop said where it stopped and what becomes of the job
        return Stopped.exit_status
    report_written(args, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
