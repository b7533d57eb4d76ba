"""The method catalog is the one list of methods: every entry resolves to its class and settings,
and a new method is one module, one catalog entry, its schema and config.yaml sections: no rule
file changes."""

from __future__ import annotations

import dataclasses

import yaml

from imbssl.methods import catalog
from imbssl.methods.registry import Method, MethodConfig, get_method

from helpers.repo import REPO, copy_repo, snakemake


def test_every_catalog_entry_resolves_to_its_method_and_settings():
    for name, info in catalog.METHODS.items():
        cls, config_cls = get_method(name)
        assert issubclass(cls, Method) and cls.name == name, name
        assert dataclasses.is_dataclass(config_cls) and issubclass(config_cls, MethodConfig), name


def test_labels_and_tables_come_from_the_catalog():
    assert [catalog.label(m) for m in ("simclr", "simsiam", "simsiam-c-d", "simsiam-d", "msn", "pmsn")] == \
        ["SimCLR", "SimSiam", "SimSiam+C+D", "SimSiam+D", "MSN", "PMSN"]
    configured = ["simsiam", "simclr", "msn", "pmsn"]
    assert catalog.table_columns("table2", configured) == ["SimSiam", "SimCLR"]
    assert catalog.table_columns("table3", ["simsiam"]) == ["SimCLR", "SimSiam", "SimSiam+C+D", "SimSiam+D"]
    assert catalog.table_columns("table4", configured) == ["SimSiam", "SimCLR", "MSN", "PMSN"]  # every method
    assert catalog.table_runs("table3", configured) == ["simsiam", "simclr", "simsiam-c-d", "simsiam-d"]
    assert catalog.prototype_methods(configured) == ["msn", "pmsn"]


TOY_MODULE = '''"""A toy method for the catalog test: the mean squared distance between the two views' features."""

from dataclasses import dataclass

from imbssl.methods.registry import Method, MethodConfig, output_std


@dataclass
class ToyConfig(MethodConfig):
    scale: float = 2.0  # multiplies the loss


class Toy(Method):
    name = "toy"

    def loss(self, views, index=None):
        z1, z2 = self.backbone(views[0]), self.backbone(views[1])
        return self.config.scale * (z1 - z2).pow(2).mean(), {"out_std": output_std(z1)}
'''


def add_toy_method(repo):
    """What adding a method takes: its module, its catalog entry, its schema and config sections."""
    (repo / "src/imbssl/methods/toy.py").write_text(TOY_MODULE)
    catalog_file = repo / "src/imbssl/methods/catalog.py"
    catalog_file.write_text(catalog_file.read_text() + '\nMETHODS["toy"] = MethodInfo("toy", "toy", "Toy", "ToyConfig", '
                            '"Toy", tables=("table2",))\n')
    schema_file = repo / "workflow/schemas/config.schema.yaml"
    schema = yaml.safe_load(schema_file.read_text())
    schema["properties"]["methods"]["items"]["enum"].append("toy")
    schema["properties"]["toy"] = {
        "type": "object", "additionalProperties": False, "default": {},
        "properties": {"model": {"$ref": "#/$defs/method_model", "default": {}},
                       **{key: value for key, value in schema["properties"]["simsiam"]["properties"].items()
                          if key in ("optimizer", "base_lr", "weight_decay", "momentum", "warmup_epochs")},
                       "scale": {"type": "number", "default": 2.0}}}
    schema_file.write_text(yaml.safe_dump(schema, sort_keys=False))
    config_file = repo / "config.yaml"
    config_file.write_text(config_file.read_text() + "\ntoy:\n  scale: 2.0\n")


def test_a_new_method_plans_through_snakemake_without_editing_a_rule_file(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    rules_before = {p.name: p.read_text() for p in (repo / "workflow/rules").glob("*.smk")}
    add_toy_method(repo)
    done = snakemake(repo, "-n", "-p", "--configfile", "config/demo.yaml", "--config", "methods=[simsiam,toy]",
                     "toy={warmup_epochs: 1}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    subsets = ["imbalanced-p100", "balanced-p100", "full"]  # the demo's: one imbalance factor
    for subset in subsets:
        assert f"results/pretrain/{subset}/toy/seed0/model.pt" in out, subset
        assert f"results/eval/{subset}/toy/seed0.json" in out, subset
    toy_commands = [line for line in out.splitlines() if "imbssl pretrain --method toy" in line]
    assert len(toy_commands) == len(subsets)
    assert all("--scale 2.0" in line and "--warmup-epochs 1" in line for line in toy_commands)
    assert "--method-name Toy" in out  # its label from the catalog reaches the evaluate job
    table2 = next(line for line in out.splitlines() if "imbssl table " in line and "table2" in line)
    assert "--methods SimSiam Toy" in table2
    # Nothing else was edited to get there.
    assert {p.name: p.read_text() for p in (repo / "workflow/rules").glob("*.smk")} == rules_before
    assert (repo / "Snakefile").read_text() == (REPO / "Snakefile").read_text()
