"""The documentation says what the program does: the options table matches `--help`, and the
README's links lead somewhere."""

import re

import typer.main

from camcli.cli import app
from camcli.settings.fields import FIELDS, shown_default
from conftest import ROOT


def _table(path) -> dict[str, tuple[str, str]]:
    """`--flag` -> (meaning, default) from the first options table of a Markdown page."""
    rows = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\| `(--[a-z-]+)(?:, -[a-z])?` \| (.*) \|\s*(.*?)\s*\|$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip().strip("`"))
    return rows


def test_options_table_matches_help_and_defaults():
    table = _table(ROOT / "docs" / "usage.md")
    command = typer.main.get_command(app).commands["explain"]
    flags = {opt for p in command.params for opt in p.opts if opt.startswith("--") and opt != "--help"}
    assert set(table) == flags, f"documented but missing: {set(table) - flags}; undocumented: {flags - set(table)}"
    for name in FIELDS:
        flag = "--" + name.replace("_", "-")
        assert table[flag][1] == (shown_default(name) or ""), f"{flag}: docs say {table[flag][1]!r}"


def test_readme_links_lead_to_files():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert len(links) >= 6
    for link in links:
        assert (ROOT / link).exists(), link
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.name} links to {link}"
