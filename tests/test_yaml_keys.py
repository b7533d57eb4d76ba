"""No YAML file of the project repeats a key: PyYAML silently keeps the last one, so a repeated
section (config.yaml once had `clustering.distill` twice, the first one empty) hides the other."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The configs and presets a run reads, the benchmark presets, and the other YAML Snakemake reads.
YAML_FILES = sorted(
    path.relative_to(REPO).as_posix()
    for pattern in ("config.yaml", "config/*.yaml", "benchmarks/*.yaml", "profiles/*/config.yaml", "envs/*.yaml",
                    "workflow/schemas/*.yaml")
    for path in REPO.glob(pattern)
)
MERGE_TAG = "tag:yaml.org,2002:merge"


def duplicate_keys(text: str) -> list[str]:
    """'dotted.key (lines A and B)' for every key a mapping states twice, at any depth.

    Reads the node tree PyYAML composes (before it builds dicts, where a repeated key is lost).
    Keys merged in with `<<: *anchor` may be overridden: only keys written out count."""
    found: list[str] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in seen_nodes:  # an alias: its anchor was walked already
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = f"{path}.{key_node.value}" if path else str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    found.append(f"{key} (lines {first_line[key]} and {line})")
                first_line.setdefault(key, line)
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if document is not None:
            walk(document, "")
    return found


def test_the_project_has_yaml_files_to_check():
    assert {"config.yaml", "config/demo.yaml", "benchmarks/cifar10_cpu_p100.yaml"} <= set(YAML_FILES)


@pytest.mark.parametrize("name", YAML_FILES)
def test_no_key_appears_twice(name):
    duplicates = duplicate_keys((REPO / name).read_text())
    assert not duplicates, f"{name}: repeated keys {duplicates}; PyYAML keeps only the last: merge them into one"


def test_duplicate_keys_are_found_at_any_depth_and_merge_overrides_are_not():
    text = """
a: &base
  x: 1
  y: 2
b:
  <<: *base
  x: 3            # overrides the merged x: allowed
clustering:
  distill:
  k: 5
  distill:
    lr: 0.1
    lr: 0.2
"""
    assert duplicate_keys(text) == ["clustering.distill (lines 9 and 11)", "clustering.distill.lr (lines 12 and 13)"]
    # What the check guards against: the plain loader takes the text without a word, keeping the last.
    assert yaml.safe_load(text)["clustering"]["distill"] == {"lr": 0.2}
