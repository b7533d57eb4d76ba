"""The `imbssl` command line: argument parsing only, one function call per command.

Every Snakemake rule runs one of these commands; each is usable on its own too
(`imbssl <command> --help`).
"""

from __future__ import annotations

import argparse
import sys

from imbssl import UserError


def _cmd_prepare_data(args):
    from imbssl.data.store import prepare

    prepare(args.name, args.root, args.out_train, args.out_test, image_size=args.image_size,
            classes=args.classes, test_fraction=args.test_fraction, split_seed=args.split_seed,
            store_size=args.store_size, train_list=args.train_list, test_list=args.test_list,
            extra_train_list=args.extra_train_list, class_names=args.class_names, workers=args.workers)


def _cmd_subsets(args):
    from imbssl.data.subsets import write_all

    write_all(args.train_data, args.imbalance_factors, args.seed, args.out_dir, profile=args.profile)


def _pretrain_parser(parser: argparse.ArgumentParser, method: str | None) -> None:
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods import get_method
    from imbssl.models.backbones import ModelConfig
    from imbssl.settings import add_flags, parse_bool
    from imbssl.training.loop import TrainSettings

    parser.add_argument("--method", required=True, help="registered method name (simsiam, simclr, msn, ...)")
    parser.add_argument("--train-data", required=True, help="train split .npz from prepare-data")
    parser.add_argument("--test-data", required=True, help="test split .npz (for kNN monitoring only)")
    parser.add_argument("--subset", required=True, help="subset CSV (index,label) of the images to train on")
    parser.add_argument("--out-dir", required=True, help="writes model.pt, metrics.csv (checkpoint.pt while running)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None, help="model.pt to start from (experts start from the base model)")
    parser.add_argument("--init-heads", type=parse_bool, default=True, metavar="BOOL",
                        help="with --init, also copy the method's heads (not only the backbone)")
    add_flags(parser, TrainSettings, "training")
    add_flags(parser, ModelConfig, "model")
    add_flags(parser, AugmentConfig, "augmentation")
    if method is not None:
        add_flags(parser, get_method(method)[1], f"method {method}")


def _cmd_pretrain(args):
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods import get_method
    from imbssl.models.backbones import ModelConfig
    from imbssl.settings import from_args
    from imbssl.training.loop import TrainSettings, pretrain

    pretrain(
        method=args.method,
        method_config=from_args(get_method(args.method)[1], args),
        train_data=args.train_data,
        test_data=args.test_data,
        subset=args.subset,
        out_dir=args.out_dir,
        seed=args.seed,
        settings=from_args(TrainSettings, args),
        model=from_args(ModelConfig, args),
        augment=from_args(AugmentConfig, args),
        init=args.init,
        init_heads=args.init_heads,
    )


def _cmd_evaluate(args):
    from imbssl.evaluation.evaluate import EvalSettings, evaluate_checkpoint
    from imbssl.settings import from_args

    evaluate_checkpoint(
        model=args.model, train_data=args.train_data, test_data=args.test_data,
        eval_subset=args.eval_subset, pretrain_subset=args.pretrain_subset,
        subset_name=args.subset_name, method_name=args.method_name, seed=args.seed,
        out=args.out, settings=from_args(EvalSettings, args),
    )


def _cmd_table(args):
    from imbssl.reporting.tables import write_table

    write_table(args.results, args.methods, args.out_csv, args.out_md, title=args.title,
                differences=[tuple(pair) for pair in args.difference], imbalance_gaps=args.imbalance_gaps,
                out_differences=args.out_differences)


def _cmd_figure_subsets(args):
    from imbssl.reporting.figures import PlotSettings, figure_class_distribution
    from imbssl.settings import from_args

    figure_class_distribution(args.subsets, args.train_data, args.out, from_args(PlotSettings, args))


def _args_prepare_data(p):
    from imbssl.data.store import SOURCES

    p.add_argument("--name", required=True, choices=SOURCES)
    p.add_argument("--root", default="data")
    p.add_argument("--image-size", type=int, default=None, help="training/evaluation crop (default: stored size)")
    p.add_argument("--store-size", type=int, default=None,
                   help="shorter side of the stored images, then centre-cropped (folder, imagelist)")
    p.add_argument("--classes", nargs="+", default=None, help="class order for folder datasets")
    p.add_argument("--train-list", default=None, help="imagelist: 'relative/path.jpg label' per line")
    p.add_argument("--test-list", default=None, help="imagelist: the test split's list")
    p.add_argument("--extra-train-list", default=None,
                   help="imagelist: more train images, drawn on by balanced subsets and `full` only")
    p.add_argument("--class-names", default=None, help="imagelist: one class name per line")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: the CPUs available)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="digits only")
    p.add_argument("--split-seed", type=int, default=0, help="digits only")
    p.add_argument("--out-train", required=True)
    p.add_argument("--out-test", required=True)


def _args_subsets(p):
    p.add_argument("--train-data", required=True)
    from imbssl.data.subsets import PROFILES

    p.add_argument("--imbalance-factors", type=float, nargs="+", required=True)
    p.add_argument("--profile", choices=PROFILES, default="exponential",
                   help="exponential (CIFAR-LT) or step (Buda et al. 2018: half the classes keep n/p)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)


def _args_pretrain(p):
    _pretrain_parser(p, _peek_method(sys.argv[1:]))


def _args_evaluate(p):
    from imbssl.evaluation.evaluate import EvalSettings
    from imbssl.settings import add_flags

    p.add_argument("--model", required=True)
    p.add_argument("--train-data", required=True)
    p.add_argument("--test-data", required=True)
    p.add_argument("--eval-subset", required=True, help="balanced subset CSV the linear classifier trains on")
    p.add_argument("--pretrain-subset", required=True, help="subset CSV the model was pretrained on (for N)")
    p.add_argument("--subset-name", required=True)
    p.add_argument("--method-name", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    add_flags(p, EvalSettings, "evaluation")


def _args_table(p):
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--methods", nargs="+", required=True, help="display names, in column order")
    p.add_argument("--title", default="")
    p.add_argument("--difference", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="paired difference A - B of two methods on each subset (repeatable)")
    p.add_argument("--imbalance-gaps", action="store_true",
                   help="paired difference imbalanced-pX - balanced-pX of each method")
    p.add_argument("--out-differences", default=None, help="CSV of the paired differences")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)


def _args_figure_subsets(p):
    from imbssl.reporting.figures import PlotSettings
    from imbssl.settings import add_flags

    p.add_argument("--subsets", nargs="+", required=True)
    p.add_argument("--train-data", required=True, help="prepared train split (its class names label the axis)")
    p.add_argument("--out", nargs="+", required=True, help="one file per format (.png, .pdf, .svg)")
    add_flags(p, PlotSettings, "plot")


def _args_bench(p):
    from imbssl.bench.engine import BenchSettings
    from imbssl.settings import add_flags, parse_bool

    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--data-paths", type=parse_bool, default=False, metavar="BOOL",
                   help="instead: resident vs streamed vs a JPEG-decoding DataLoader (bench_data.py), with "
                        "--arch, --width, --image-size, --batch-size, --num-images, --workers and the step counts")
    p.add_argument("--store-size", type=int, default=None,
                   help="--data-paths: shorter side of the stored images (default: image_size x 8/7, 256 for 224)")
    add_flags(p, BenchSettings, "benchmark")


def _cmd_bench(args):
    from imbssl.bench.engine import BenchSettings, run
    from imbssl.settings import from_args

    if args.data_paths:
        return _cmd_bench_data(args)
    run(from_args(BenchSettings, args), args.out)


def _cmd_bench_data(args):
    import dataclasses

    from imbssl.core.atomic import write_json
    from imbssl.bench.data_paths import DataBenchSettings, print_report, run
    from imbssl.data.device import resolve_device

    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(DataBenchSettings) if f.name != "store_size"}
    settings = DataBenchSettings(**shared, store_size=args.store_size or round(args.image_size * 8 / 7))
    report = run(settings, resolve_device(args.device))
    print_report(report)
    if args.out:
        write_json(args.out, report)


def _args_features(p):
    p.add_argument("--model", required=True)
    p.add_argument("--train-data", required=True)
    p.add_argument("--subset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size-features", type=int, default=1024)
    p.add_argument("--device", default="auto")


def _cmd_features(args):
    from imbssl.evaluation.features import write_features

    write_features(args.model, args.train_data, args.subset, args.out, args.batch_size_features, args.device)


def _args_cluster(p):
    from imbssl.clustering.kmeans import KMeansSettings
    from imbssl.settings import add_flags

    p.add_argument("--features", required=True)
    p.add_argument("--subset", required=True)
    p.add_argument("--train-data", required=True, help="prepared train split (class names of the cluster x class table)")
    p.add_argument("--subset-name", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    add_flags(p, KMeansSettings, "clustering")


def _cmd_cluster(args):
    from imbssl.clustering.kmeans import KMeansSettings, cluster_subset
    from imbssl.settings import from_args

    cluster_subset(args.features, args.subset, args.out_dir, args.seed, from_args(KMeansSettings, args),
                   args.subset_name, args.train_data)


def _args_partition_random(p):
    p.add_argument("--clusters-dir", required=True, help="k-means output whose cluster sizes to copy")
    p.add_argument("--subset", required=True)
    p.add_argument("--train-data", required=True, help="prepared train split (class names)")
    p.add_argument("--subset-name", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)


def _cmd_partition_random(args):
    from imbssl.clustering.kmeans import partition_random_like

    partition_random_like(args.clusters_dir, args.subset, args.out_dir, args.seed, args.subset_name,
                          args.train_data)


def _args_distill(p):
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods.distill import DistillConfig
    from imbssl.settings import add_flags
    from imbssl.training.loop import TrainSettings

    p.add_argument("--base", required=True, help="base model.pt")
    p.add_argument("--experts", nargs="+", required=True, help="expert model.pt files, cluster 0 first")
    p.add_argument("--clusters", required=True, help="assignments.csv of the partition the experts used")
    p.add_argument("--train-data", required=True)
    p.add_argument("--test-data", required=True)
    p.add_argument("--subset", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    add_flags(p, DistillConfig, "distillation")
    add_flags(p, TrainSettings, "training")
    add_flags(p, AugmentConfig, "augmentation")


def _cmd_distill(args):
    from imbssl.data.augment import AugmentConfig
    from imbssl.methods.distill import DistillConfig, distill
    from imbssl.settings import from_args
    from imbssl.training.loop import TrainSettings

    distill(args.base, args.experts, args.clusters, args.train_data, args.test_data, args.subset, args.out_dir,
            args.seed, config=from_args(DistillConfig, args), settings=from_args(TrainSettings, args),
            augment=from_args(AugmentConfig, args))


def _args_figure_clusters(p):
    from imbssl.reporting.figures import PlotSettings
    from imbssl.settings import add_flags

    p.add_argument("--pca", required=True)
    p.add_argument("--contingency", required=True)
    p.add_argument("--summary", default=None)
    p.add_argument("--out", nargs="+", required=True)
    add_flags(p, PlotSettings, "plot")


def _cmd_figure_clusters(args):
    from imbssl.reporting.figures import PlotSettings, figure3
    from imbssl.settings import from_args

    figure3(args.pca, args.contingency, args.out, from_args(PlotSettings, args), summary_file=args.summary)


def _args_cluster_table(p):
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--expert-metrics", nargs="+", default=[],
                   help="the experts' metrics.csv, partition by partition in --summaries order, cluster 0 first")
    p.add_argument("--min-expert-steps", type=int, default=50,
                   help="warn about experts that took fewer optimizer steps")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)


def _cmd_cluster_table(args):
    from imbssl.reporting.tables import write_cluster_table

    write_cluster_table(args.summaries, args.out_csv, args.out_md, args.expert_metrics, args.min_expert_steps)


def _args_prototype_usage(p):
    from imbssl.methods import get_method
    from imbssl.settings import add_flags

    method = _peek_method(sys.argv[1:])
    p.add_argument("--method", required=True, choices=["msn", "pmsn"])
    p.add_argument("--model", required=True)
    p.add_argument("--train-data", required=True)
    p.add_argument("--subset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    if method is not None:
        add_flags(p, get_method(method)[1], f"method {method}")


def _cmd_prototype_usage(args):
    from imbssl.methods import get_method
    from imbssl.evaluation.prototypes import write_usage
    from imbssl.settings import from_args

    write_usage(args.model, args.train_data, args.subset, args.out, from_args(get_method(args.method)[1], args),
                device=args.device)


def _args_figure_prototypes(p):
    from imbssl.reporting.figures import PlotSettings
    from imbssl.settings import add_flags

    p.add_argument("--usage", nargs="+", required=True, help="prototype-usage JSON files")
    p.add_argument("--title", default="")
    p.add_argument("--out", nargs="+", required=True)
    add_flags(p, PlotSettings, "plot")


def _cmd_figure_prototypes(args):
    from imbssl.reporting.figures import PlotSettings, figure_prototype_usage
    from imbssl.settings import from_args

    figure_prototype_usage(args.usage, args.out, args.title, from_args(PlotSettings, args))


def _args_results_and_subsets(p):
    from imbssl.reporting.analysis import AnalysisSettings
    from imbssl.settings import add_flags

    p.add_argument("--results", nargs="+", required=True, help="result JSONs (the evaluate rule's)")
    p.add_argument("--subsets", nargs="+", required=True,
                   help="subset CSVs: every subset of the results and their imbalanced twins")
    add_flags(p, AnalysisSettings, "analysis")


def _args_group_table(p):
    _args_results_and_subsets(p)
    p.add_argument("--methods", nargs="+", required=True, help="method labels in column order")
    p.add_argument("--title", default="")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)


def _cmd_group_table(args):
    from imbssl.reporting.analysis import AnalysisSettings
    from imbssl.reporting.per_class import write_group_table
    from imbssl.settings import from_args

    write_group_table(args.results, args.subsets, args.methods, args.out_csv, args.out_md, args.title,
                      from_args(AnalysisSettings, args))


def _args_per_class_table(p):
    _args_results_and_subsets(p)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)


def _cmd_per_class_table(args):
    from imbssl.reporting.analysis import AnalysisSettings
    from imbssl.reporting.per_class import write_per_class_table
    from imbssl.settings import from_args

    write_per_class_table(args.results, args.subsets, args.out_csv, args.out_md, from_args(AnalysisSettings, args))


def _args_figure_frequency(p):
    from imbssl.reporting.figures import PlotSettings
    from imbssl.settings import add_flags

    _args_results_and_subsets(p)
    p.add_argument("--title", default="")
    p.add_argument("--out", nargs="+", required=True)
    add_flags(p, PlotSettings, "plot")


def _cmd_figure_frequency(args):
    from imbssl.reporting.analysis import AnalysisSettings
    from imbssl.reporting.figures import PlotSettings, figure_accuracy_vs_frequency
    from imbssl.settings import from_args

    figure_accuracy_vs_frequency(args.results, args.subsets, args.out, args.title, from_args(PlotSettings, args),
                                 from_args(AnalysisSettings, args))


def _args_figure_curves(p):
    from imbssl.reporting.figures import PlotSettings
    from imbssl.settings import add_flags

    p.add_argument("--metrics", nargs="+", required=True, help="metrics.csv of each training job")
    p.add_argument("--labels", nargs="+", required=True, help="a name per metrics file (column titles)")
    p.add_argument("--title", default="")
    p.add_argument("--out", nargs="+", required=True)
    add_flags(p, PlotSettings, "plot")


def _cmd_figure_curves(args):
    from imbssl.reporting.figures import PlotSettings, figure_training_curves
    from imbssl.settings import from_args

    figure_training_curves(args.metrics, args.labels, args.out, args.title, from_args(PlotSettings, args))


def _args_figure_stages(p):
    from imbssl.reporting.figures import PlotSettings
    from imbssl.settings import add_flags

    p.add_argument("--base", required=True, help="the base model's metrics.csv")
    p.add_argument("--kinds", nargs="+", required=True, help="partition kinds, one figure column each")
    p.add_argument("--experts", nargs="+", required=True,
                   help="the experts' metrics.csv, kind by kind in --kinds order, as many per kind")
    p.add_argument("--students", nargs="+", required=True, help="a student's metrics.csv per kind")
    p.add_argument("--title", default="")
    p.add_argument("--out", nargs="+", required=True)
    add_flags(p, PlotSettings, "plot")


def _cmd_figure_stages(args):
    from imbssl.reporting.figures import PlotSettings, figure_stage_curves
    from imbssl.settings import from_args

    per_kind, extra = divmod(len(args.experts), len(args.kinds))
    if extra:
        raise UserError(f"figure-stages: {len(args.experts)} expert metrics files do not split evenly over "
                        f"{len(args.kinds)} kinds; pass the same number of experts per kind")
    experts = [args.experts[i * per_kind:(i + 1) * per_kind] for i in range(len(args.kinds))]
    figure_stage_curves(args.base, experts, args.students, args.kinds, args.out, args.title,
                        from_args(PlotSettings, args))


def _args_export(p):
    from imbssl.models.export import FORMATS

    p.add_argument("model", help="a model.pt of the pipeline (results/pretrain/<subset>/<method>/seed<seed>/model.pt)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="torchvision / timm: a state dict their model loads with strict=True; "
                        "safetensors: the state dict (torchvision's key names) with the metadata as strings")
    p.add_argument("--out", required=True, help="file to write (e.g. resnet18.pt, backbone.safetensors)")


def _cmd_export(args):
    from imbssl.exporting import export_model

    code = export_model(args.model, args.format, args.out)
    print(f"# Wrote {args.out} ({args.format}). Load it with:\n{code}", end="")


# name -> (help, adds the command's flags, runs it). Flags are added only for the command being
# run, so that e.g. `imbssl table` never imports torch.
COMMANDS = {
    "prepare-data": ("decode a dataset once into cached .npz splits", _args_prepare_data, _cmd_prepare_data),
    "subsets": ("write imbalanced-pX, balanced-pX and full subset CSVs", _args_subsets, _cmd_subsets),
    "pretrain": ("self-supervised pretraining of one method on one subset", _args_pretrain, _cmd_pretrain),
    "evaluate": ("linear probe + kNN + per-class accuracy of a backbone", _args_evaluate, _cmd_evaluate),
    "table": ("mean/std over seeds of result JSONs as CSV + Markdown", _args_table, _cmd_table),
    "figure-subsets": ("Figure 1: images per class of every subset", _args_figure_subsets, _cmd_figure_subsets),
    "features": ("backbone features of a subset (for clustering)", _args_features, _cmd_features),
    "cluster": ("k-means of a subset's features, with cluster-vs-class metrics", _args_cluster, _cmd_cluster),
    "partition-random": ("random partition with the k-means cluster sizes (+D ablation)", _args_partition_random,
                         _cmd_partition_random),
    "distill": ("distil a base model and per-cluster experts into one student", _args_distill, _cmd_distill),
    "figure-clusters": ("Figure 3: PCA of features by cluster + cluster x class heatmap", _args_figure_clusters,
                        _cmd_figure_clusters),
    "cluster-table": ("cluster sizes and NMI/ARI of every partition", _args_cluster_table, _cmd_cluster_table),
    "prototype-usage": ("how many images each MSN/PMSN prototype wins", _args_prototype_usage,
                        _cmd_prototype_usage),
    "figure-prototypes": ("prototype usage vs the prior, log-log", _args_figure_prototypes, _cmd_figure_prototypes),
    "group-table": ("head/medium/tail, balancedness and worst-class accuracy over seeds", _args_group_table,
                    _cmd_group_table),
    "per-class-table": ("per-class accuracy of every run, with train images and group", _args_per_class_table,
                        _cmd_per_class_table),
    "figure-frequency": ("per-class accuracy against the class's training images", _args_figure_frequency,
                         _cmd_figure_frequency),
    "figure-curves": ("loss, kNN monitor and output std per epoch of training jobs", _args_figure_curves,
                      _cmd_figure_curves),
    "figure-stages": ("Experiment II's training curves: base -> experts -> student", _args_figure_stages,
                      _cmd_figure_stages),
    "bench": ("training throughput: the engine vs a conventional DataLoader pipeline", _args_bench, _cmd_bench),
    "export": ("a model.pt's backbone for torchvision, timm or safetensors, with the code that loads it",
               _args_export, _cmd_export),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imbssl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            add_args(p)
        p.set_defaults(func=run)
    return parser


def _peek_method(argv: list[str]) -> str | None:
    """The --method value, needed before parsing to add that method's own flags."""
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--method="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        args = build_parser(sys.argv[1:]).parse_args(sys.argv[1:])
        args.func(args)
    except UserError as err:
        print(f"imbssl: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
