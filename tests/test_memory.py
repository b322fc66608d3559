"""Work in flight bounded by bytes: big photos batch alone, the same maps come out, and the plan is said."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import read_csv


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(9)
    for i, (w, h) in enumerate([(1500, 1000), (320, 240), (4000, 3000), (1200, 1600), (300, 300)]):
        small = rng.integers(0, 256, (h // 50 + 1, w // 50 + 1, 3), dtype=np.uint8)
        cv2.imwrite(str(d / f"{i}.jpg"), cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))
    return d


def run(cli, small_model, photos, out, *args):
    r = cli("explain", photos, "--model", "resnet18", "--checkpoint", small_model / "r18.pth", "--input-size", "64",
            "--workers", "2", "--save-heatmap", "npy", "--heatmap-size", "layer", "--boxes", "--out", out, *args)
    assert r.exit_code == 0, r.stderr
    return r, read_csv(out / "predictions.csv")


def test_a_small_budget_gives_the_same_results_in_smaller_batches(cli, small_model, photos, tmp_path):
    _, whole = run(cli, small_model, photos, tmp_path / "whole")
    r, bounded = run(cli, small_model, photos, tmp_path / "bounded", "--memory-budget", "64")
    # the 12-megapixel photo (36 MB decoded) is processed alone, the others two by two, decoded in
    # the main process (a worker process would cost more than the whole budget);
    # the plan is said in the log
    assert "memory budget 64 MB: 3 batch(es), 0 loader worker(s), prefetch 1, 1 writer thread(s)" in r.stderr
    plain = {k for k in whole[0] if "score" not in k}
    assert [{k: row[k] for k in plain} for row in whole] == [{k: row[k] for k in plain} for row in bounded]
    for a, b in zip(whole, bounded):
        np.testing.assert_allclose(np.load(tmp_path / "whole" / a["heatmap"]),
                                   np.load(tmp_path / "bounded" / b["heatmap"]), atol=1e-5)
        for k in a:
            if "score" in k and a[k]:
                assert abs(float(a[k]) - float(b[k])) <= 1e-5
    assert all(row["status"] == "ok" for row in bounded) and len(bounded) == 5


def test_budget_must_be_sensible(cli, small_model, photos, tmp_path):
    r = cli("explain", photos, "--model", "resnet18", "--checkpoint", small_model / "r18.pth",
            "--memory-budget", "8", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--memory-budget is in megabytes and must be at least 64" in r.stderr
