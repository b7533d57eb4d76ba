"""imbssl: what class imbalance does to self-supervised pretraining, and how to fix it.

    snakemake --cores all                                  # the paper's Experiment I (config.yaml)
    snakemake --cores all --configfile config/demo.yaml    # the CPU demo on digits

Every job runs one `imbssl <command>`; the rules live in workflow/rules/.
"""

from pathlib import Path

from snakemake.utils import min_version, validate

from imbssl.config_check import check_config

min_version("9.0")


configfile: "config.yaml"


# One-line message naming the bad key before anything else; then Snakemake's own validation
# against the same schema fills in the defaults of every key left out.
check_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
validate(config, "workflow/schemas/config.schema.yaml", set_default=True)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.table2.output,
        rules.figure1.output,
