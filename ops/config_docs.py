"""Print docs/CONFIGURATION.md's settings table from the Settings class (the one source)."""

from __future__ import annotations

from omnichat.settings import Settings


def settings_table() -> str:
    """Markdown table of every setting: variable, default, meaning."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `OMNICHAT_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
