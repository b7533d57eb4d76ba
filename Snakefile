"""imbssl: what class imbalance does to self-supervised pretraining, and how to fix it.

    snakemake --cores all                                  # the paper's experiments (config.yaml)
    snakemake --cores all --configfile config/demo.yaml    # the CPU demo on digits
    snakemake --report results/report.html                 # every table and figure, with captions

Every job runs one `imbssl <command>`; the rules live in workflow/rules/.
"""

import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

from imbssl.config_check import canonicalize, check_config, check_plan, load_schema
from imbssl.reporting.overview import config_mismatch, report_mode, write_report_text

min_version("9.0")


# This workflow's own files (config defaults, schema, report text, conda envs, rules) are found from
# this Snakefile's folder, never from the working directory or workflow.basedir (the folder of the
# *main* Snakefile): so the workflow also runs as a module of another workflow (README, "Use as a
# Snakemake module"). Outputs stay relative to the working directory (results/...). Rules files
# name their conda envs and report captions relative to themselves, which Snakemake resolves so.
WORKFLOW_DIR = Path(workflow.current_basedir.get_path_or_uri(secret_free=True))

# Jobs run `imbssl`, installed beside the Python that runs Snakemake: put that bin folder first on
# PATH so that `.venv/bin/snakemake` works without activating the venv (a conda env, with --sdm
# conda, still comes first in its jobs).
os.environ["PATH"] = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
)
# One torch.compile cache for every job of the run (inductor's on-disk cache, unless the user set
# their own): the second job that compiles the same model loads the kernels the first one built.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", str(Path("results/cache/torchinductor").resolve())
)
# The conda envs install this package with `pip: -e ${IMBSSL_WORKFLOW_DIR}`. A relative path cannot
# work there: Snakemake copies an env file to .snakemake/conda/<hash>.yaml before `conda env
# create`, and conda runs pip from that copy's folder. pip expands ${VAR} in requirements, and
# conda (started by Snakemake) inherits this process's environment.
os.environ["IMBSSL_WORKFLOW_DIR"] = str(WORKFLOW_DIR)


# Declared, so that remote jobs get them too.
envvars:
    "PATH",
    "TORCHINDUCTOR_CACHE_DIR",
    "IMBSSL_WORKFLOW_DIR",


# The defaults. `--configfile` merges over them; a module's `config:` replaces them (Snakemake skips
# `configfile:` in a module given a config). A plain path (not workflow.source_path, which points
# into a temporary source cache) because Snakemake records config files for source archives.
configfile: str(WORKFLOW_DIR / "config.yaml")


# Read at parse time only, through Snakemake's source cache: also works for a remote module.
SCHEMA = workflow.source_path("workflow/schemas/config.schema.yaml")
# One-line message naming the bad key before anything else; then Snakemake's own validation
# against the same schema fills in the defaults of every key left out.
check_config(config, SCHEMA)
validate(config, SCHEMA, set_default=True)
# One order of keys and one type per number, so that the same settings always render the same
# params, whatever the order of config files, `--config` overrides or filled-in defaults.
canonicalize(config, load_schema(SCHEMA))
# What the schema cannot say (epoch budget of Experiment II, subset names), also in one line.
check_plan(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/prior.smk"


# `snakemake --report` takes its tables and figures from the files on disk but renders its captions
# from this config: when the result files were made with other settings, it stops here in one line
# naming them; otherwise its landing page describes the run from the files' provenance. With
# --report-after-run the run first brings the results up to date: the text is written again after
# it (Snakemake skips onsuccess when there was nothing to do, and then the results are current).
REPORT_MODE = report_mode(sys.argv)
REPORT_DESCRIPTION = workflow.source_path("workflow/report/workflow.rst")
REPORT_TEXT = Path(".snakemake/imbssl/report.rst").resolve()
if REPORT_MODE == "report":
    mismatch = config_mismatch(report_expectations())
    if mismatch:
        print(mismatch, file=sys.stderr)
        sys.exit(1)
if REPORT_MODE:
    write_report_text(ALL_RESULTS, REPORT_DESCRIPTION, REPORT_TEXT)


# A module leaves the report text to its caller.
report: str(REPORT_TEXT) if REPORT_MODE else "workflow/report/workflow.rst"


onsuccess:
    if REPORT_MODE == "after-run":
        write_report_text(ALL_RESULTS, REPORT_DESCRIPTION, REPORT_TEXT)


rule all:
    default_target: True
    input:
        rules.figure1.output,
        # Experiment I: the baselines on every subset.
        rules.table2.output if BASELINES else [],
        # Experiment II: clustering + distillation on clustering.subsets.
        rules.table3.output if CLUSTER_SUBSETS else [],
        rules.cluster_table.output if CLUSTER_SUBSETS else [],
        expand(rules.figure3.output, subset=CLUSTER_SUBSETS),
        # The power-law prior: MSN vs PMSN.
        rules.table4.output if PRIOR_METHODS else [],
        rules.figure4.output if PROTOTYPE_METHODS else [],
        # The hidden prior, measured: the cluster sizes every model's features imply.
        rules.prior_table.output if PRIOR_SUBSETS else [],
        rules.prior_figure.output if PRIOR_SUBSETS else [],
        # Where the accuracy goes: per class, by head / medium / tail, against class frequency.
        rules.per_class_table.output,
        rules.table2_groups.output if BASELINES else [],
        rules.frequency_table2.output if BASELINES else [],
        # When imbalance hurts: accuracy against the imbalance factor (two factors or more).
        rules.imbalance_table2.output if BASELINES and SWEPT else [],
        rules.imbalance_table4.output if PRIOR_METHODS and SWEPT else [],
        rules.table3_groups.output if CLUSTER_SUBSETS else [],
        rules.frequency_table3.output if CLUSTER_SUBSETS else [],
        rules.table4_groups.output if PRIOR_METHODS else [],
        rules.frequency_table4.output if PRIOR_METHODS else [],
        # Training curves (loss, kNN monitor, output std) of the first seed.
        expand(rules.training_curves.output, subset=SUBSETS),
        expand(rules.stage_curves.output, subset=CLUSTER_SUBSETS),
