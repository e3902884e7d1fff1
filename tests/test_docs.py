"""Docs stay in step with the code: every event column and every command is documented."""

from __future__ import annotations

import importlib
from pathlib import Path

from analyzer.api.cli import main
from analyzer.detectors import REGISTRY
from analyzer.outputs.report import FLOWS_SCHEMA
from analyzer.schema import EVENT_SCHEMA

ROOT = Path(__file__).resolve().parent.parent


def test_every_event_column_is_documented():
    text = (ROOT / "docs" / "events.md").read_text()
    for field in EVENT_SCHEMA:
        assert f"| `{field.name}` |" in text, f"docs/events.md does not document {field.name}"


def test_every_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in main.commands:
        assert f"`nicpath {name}" in readme, f"README.md does not document nicpath {name}"


def test_every_finding_kind_is_documented_with_its_fact():
    findings = (ROOT / "docs" / "findings.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for kind, det in REGISTRY.items():
        assert f"| `{kind}` | {det.fact}" in findings, f"docs/findings.md: no row for {kind}"
        assert f"`{kind}` ({det.fact})" in readme, f"README.md does not list {kind}"
        module = importlib.import_module(det.run.__module__)
        assert det.fact in det.doc and det.fact in module.__doc__, f"{kind} does not cite its fact"


def test_every_flows_parquet_column_is_documented():
    text = (ROOT / "docs" / "findings.md").read_text()
    for name in FLOWS_SCHEMA.names:
        assert f"`{name}`" in text, f"docs/findings.md does not document flows.parquet {name}"
