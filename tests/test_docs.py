"""Docs stay in step with the code: every event column and every command is documented."""

from __future__ import annotations

from pathlib import Path

from analyzer.cli import main
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
