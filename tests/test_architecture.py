"""The package's shape, read from its import statements (docs/architecture.md says why):
layers import only downwards, no module imports itself back, the torch-free side stays torch-free,
and models and methods never read files."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from imbssl.settings import PACKAGE_DIR, direct_imports

from helpers.repo import copy_workflow, snakemake

# Bottom to top: a module may import its own layer and the layers below it, never above.
LAYERS = ["root", "core", "data", "models", "methods", "evaluation", "clustering", "training", "orchestration",
          "reporting", "bench", "top"]
TOP = {"cli", "settings", "config_check"}


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(["imbssl", *parts]))
    return names


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in TOP:
        return "top"
    return parts[1]


def module_level_imports(module: str) -> set[str]:
    """Imports executed when the module is imported (not those inside functions)."""
    from imbssl.settings import _absolute, module_file

    path = module_file(module)
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path.name == "__init__.py")
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_every_package_is_a_known_layer():
    assert {layer(m) for m in modules()} == set(LAYERS)


@pytest.mark.parametrize("module", modules())
def test_no_module_imports_a_layer_above_its_own(module):
    own = LAYERS.index(layer(module))
    upward = sorted(m for m in direct_imports(module) if LAYERS.index(layer(m)) > own)
    assert not upward, f"{module} ({layer(module)}) imports {upward} from layers above it"


def test_no_import_cycle_between_modules():
    """Module-level imports form a directed acyclic graph (so do the layers, by the test above)."""
    graph = {m: {i for i in module_level_imports(m) if i in set(modules()) and i != m} for m in modules()}
    visiting, done = set(), set()

    def visit(node, path):
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join([*path, node])}"
        visiting.add(node)
        for child in graph[node]:
            if not (node.startswith(child + ".")):  # a module importing its own package's __init__ is fine
                visit(child, [*path, node])
        visiting.discard(node)
        done.add(node)

    for module in graph:
        visit(module, [])


def test_models_and_methods_never_read_files():
    """They get plain arguments: no checkpoint module, no artifact readers, no file opening."""
    readers = {"read_model", "read_subset", "read_result", "read_assignments", "read_features", "read_metrics",
               "load_split", "open", "load"}
    for module in modules():
        if layer(module) not in ("models", "methods"):
            continue
        from imbssl.settings import module_file

        tree = ast.parse(module_file(module).read_text())
        assert "imbssl.core.checkpoint" not in direct_imports(module), module
        called = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                  for node in ast.walk(tree) if isinstance(node, ast.Call)}
        assert not called & readers, f"{module} calls {sorted(called & readers)}"


def test_the_reporting_side_and_the_cli_never_import_torch():
    code = ("import sys, imbssl.cli, imbssl.config_check, imbssl.settings, imbssl.methods.catalog, "
            "imbssl.core.artifacts, imbssl.reporting.tables, imbssl.reporting.per_class, imbssl.reporting.figures, "
            "imbssl.reporting.frequency, imbssl.reporting.curves, imbssl.orchestration.launch; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_dry_run_never_imports_torch(tmp_path):
    """`snakemake -n` is what a user runs to see what a change reruns: it must stay fast."""
    workdir = copy_workflow(tmp_path / "wf")
    done = snakemake(workdir, "-n", "--quiet", "rules", "--configfile", "config/demo.yaml",
                     PYTHONPROFILEIMPORTTIME="1")
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "imbssl.settings" in imported  # the check sees the imports
    assert not {name for name in imported if name == "torch" or name.startswith("torch.")}
