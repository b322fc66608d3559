"""The audit's proof on the shipped demo, as README and docs/audit.md run it: the shortcut model
(taught a watermark in the top-left corner of stars) is flagged on the held-out pictures of
sample_shortcut/, pointing at the stamped ones; the clean demo classifier, on the same pictures,
is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import read_csv

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_shortcut"
STAMPED = set((SAMPLES / "stamped.txt").read_text().split())


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    from typer.testing import CliRunner

    from camcli.cli import app

    out = tmp_path_factory.mktemp("shortcut")
    runs = {}
    for name, extra in (("shortcut", ["--config", ROOT / "configs" / "demo-shortcut.toml"]),
                        ("clean", ["--config", ROOT / "configs" / "demo.toml", "--save-heatmap", "npy",
                                   "--heatmap-size", "layer"])):
        r = CliRunner().invoke(app, ["explain", str(SAMPLES), *map(str, extra), "--out", str(out / name),
                                     "--workers", "0", "--quiet"])
        assert r.exit_code == 0, r.output
        runs[name] = out / name
    return runs


@pytest.mark.slow
def test_the_watermark_is_flagged_and_its_pictures_named(cli, explained):
    r = cli("audit", explained["shortcut"], "--json", "--fail-on", "largest", "--html")
    assert r.exit_code == 1 and "gate failed" in r.stderr and "class star" in r.stderr
    data = json.loads(r.stdout)
    flagged = [(c["class"], k) for c in data["classes"] for k in c["clusters"] if k["flags"]]
    assert [c for c, _ in flagged] == ["star"]
    (_, cluster), = flagged
    assert cluster["cluster"] == 0 and cluster["where"] == "top-left corner"
    assert [f["flag"] for f in cluster["flags"]] == ["fixed-place"]
    look = cluster["flags"][0]["look_at"]
    assert len(look) >= 4 and all(p in STAMPED for p in look)  # the pictures it names carry the watermark
    rows = read_csv(explained["shortcut"] / "audit.csv")
    flagged_paths = {r["path"] for r in rows if "fixed-place" in r["flags"]}
    assert len(flagged_paths & STAMPED) >= 0.8 * len(flagged_paths)
    assert (explained["shortcut"] / "audit.html").stat().st_size > 10_000


@pytest.mark.slow
def test_truth_boxes_confirm_the_evidence_is_off_the_stars(cli, explained):
    r = cli("audit", explained["shortcut"], "--truth", SAMPLES / "boxes.csv", "--json", "-q")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    star = next(c for c in data["classes"] if c["class"] == "star")
    kinds = {f["flag"] for f in star["clusters"][0]["flags"]}
    assert kinds == {"fixed-place", "off-object"}
    assert not any(k["flags"] for c in data["classes"] if c["class"] != "star" for k in c["clusters"])


@pytest.mark.slow
def test_the_clean_demo_model_is_not_flagged_on_the_same_pictures(cli, explained):
    r = cli("audit", explained["clean"], "--json", "--fail-on", "any", "-q")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["flagged"] == 0
