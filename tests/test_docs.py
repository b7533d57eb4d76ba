"""The README is a front page and docs/ the manual: links resolve, and the manual names every
command and every config section, so that neither drifts from the code silently."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from imbssl.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to dashes."""
    headings = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_readme_is_a_front_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 160


def test_every_local_link_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor:
                assert anchor in anchors(linked), f"{page.name}: {target} (no such heading)"


def test_the_manual_names_every_command_and_config_section():
    development = (REPO / "docs/development.md").read_text()
    for command in COMMANDS:
        assert f"`{command}" in development, command
    configuration = (REPO / "docs/configuration.md").read_text()
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    for section in schema["properties"]:
        assert f"`{section}`" in configuration, section
