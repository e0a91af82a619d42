"""docs/CONFIGURATION.md lists every setting, as the Settings class defines it."""

from __future__ import annotations

from pathlib import Path

from ops.config_docs import settings_table


def test_configuration_doc_is_in_sync() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md").read_text()
    assert settings_table() in doc, "run: python -m ops.config_docs and update the table"
