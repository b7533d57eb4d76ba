"""Every method the pipeline knows, in one torch-free list: the Snakemake rules, the tables, the
command line and the config check all read it (nothing else lists methods).

Adding a method: write `methods/<module>.py` (its `Method` subclass and settings dataclass), add
its `MethodInfo` below, and give it a section in `workflow/schemas/config.schema.yaml` and in
`config.yaml` (the section's keys are the dataclass's fields). No rule file changes.

The distilled students of Experiment II are not methods one pretrains; they are listed as
`STUDENTS` so that the evaluate rule, the tables and the figures name them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from imbssl import UserError

# The results tables (each a rule in workflow/rules/report.smk): the experiment they belong to.
# Table 4 widens the seed paper's Table 2 to every method: which methods lose most under imbalance.
TABLES = {"table2": "Experiment I", "table3": "Experiment II", "table4": "Hidden uniform prior"}


@dataclass(frozen=True)
class MethodInfo:
    name: str  # the name in `methods:`, in paths (results/pretrain/{subset}/{name}/...) and --method
    module: str  # imbssl.methods.<module> defines it
    class_name: str  # its Method subclass in that module
    config_class: str  # its settings dataclass there (= the fields of its config section)
    label: str  # its name in tables and figures
    tables: tuple[str, ...] = ()  # the results tables it is a column of
    prototypes: bool = False  # learns prototypes: prototype usage is measured (Figure 4)
    ema_target: bool = False  # keeps an EMA target encoder


@dataclass(frozen=True)
class StudentInfo:
    """A distilled student of Experiment II: a model evaluated like a pretrained one."""

    name: str
    label: str
    partition: str  # the partition its experts trained on: kmeans (+C+D) or random (+D)
    tables: tuple[str, ...] = ("table3",)


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("simsiam", "simsiam", "SimSiam", "SimSiamConfig", "SimSiam", tables=("table2", "table3", "table4")),
        MethodInfo("simclr", "simclr", "SimCLR", "SimCLRConfig", "SimCLR", tables=("table2", "table3", "table4")),
        MethodInfo("msn", "msn", "MSN", "MSNConfig", "MSN", tables=("table4",), prototypes=True, ema_target=True),
        MethodInfo("pmsn", "msn", "PMSN", "PMSNConfig", "PMSN", tables=("table4",), prototypes=True,
                   ema_target=True),
        MethodInfo("swav", "swav", "SwAV", "SwAVConfig", "SwAV", tables=("table4",), prototypes=True),
        MethodInfo("pswav", "swav", "PSwAV", "PSwAVConfig", "PSwAV", tables=("table4",), prototypes=True),
        MethodInfo("vicreg", "vicreg", "VICReg", "VICRegConfig", "VICReg", tables=("table4",)),
        MethodInfo("byol", "byol", "BYOL", "BYOLConfig", "BYOL", tables=("table4",), ema_target=True),
        MethodInfo("dino", "dino", "DINO", "DINOConfig", "DINO", tables=("table4",), prototypes=True,
                   ema_target=True),
    )
}

STUDENTS: dict[str, StudentInfo] = {
    info.name: info
    for info in (
        StudentInfo("simsiam-c-d", "SimSiam+C+D", "kmeans"),
        StudentInfo("simsiam-d", "SimSiam+D", "random"),
    )
}

# The paper's column order where a table fixes it (Table 3 of the seed paper: SimCLR, SimSiam, then
# the two students); a column listed here is shown even when it was not run (n/a). Other tables
# list their methods in the configured order.
PAPER_COLUMNS = {"table3": ("simclr", "simsiam", "simsiam-c-d", "simsiam-d")}

# Experiment II's base and experts are models of this method.
CLUSTERING_METHOD = "simsiam"


def method_info(name: str) -> MethodInfo:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}: choose one of {', '.join(METHODS)} (key: methods)")
    return METHODS[name]


def label(name: str) -> str:
    """The name of a method or student in tables and figures (the name itself if unknown)."""
    info = METHODS.get(name) or STUDENTS.get(name)
    return info.label if info else name


def table_methods(table: str, configured: list[str]) -> list[str]:
    """The configured methods that are columns of `table`, in the configured order."""
    return [m for m in configured if table in METHODS[m].tables]


def table_runs(table: str, configured: list[str]) -> list[str]:
    """Every model whose results `table` reads: its configured methods and its students."""
    return table_methods(table, configured) + [s for s, info in STUDENTS.items() if table in info.tables]


def table_columns(table: str, configured: list[str]) -> list[str]:
    """The labels of `table`'s columns: the paper's columns where it fixes them, else its runs."""
    if table in PAPER_COLUMNS:
        return [label(name) for name in PAPER_COLUMNS[table]]
    return [label(name) for name in table_runs(table, configured)]


def prototype_methods(configured: list[str] | None = None) -> list[str]:
    """The (configured) methods whose prototype usage is measured (Figure 4)."""
    return [m for m in (list(METHODS) if configured is None else configured) if METHODS[m].prototypes]


def student_gains() -> list[tuple[str, str]]:
    """(student label, its clustering method's label): Table 3's paired differences."""
    return [(info.label, label(CLUSTERING_METHOD)) for info in STUDENTS.values()]
