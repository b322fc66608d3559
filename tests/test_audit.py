"""`camcli audit` on runs whose maps we know: clusters found, shortcuts flagged as hypotheses, gates,
files and refusals. The runs are written as camcli writes them (its row class, npy maps), with
maps drawn where each picture's object is, and in some pictures at a fixed corner instead."""

import json
import os

import numpy as np
import pytest

import camcli
from camcli.errors import UsageError
from conftest import read_csv

SIDE = 14


def make_run(folder, classes, seed=0, size=(224, 224), heatmaps=True):
    """``classes``: {name: [(n, place)...]} where place is "object" (a blob at a random spot, whose box
    is returned as truth) or (x, y) in fractions of the picture (a fixed place; the object elsewhere)."""
    from camcli.output.csvfile import write_rows
    from camcli.output.rows import PredictionRow

    rng = np.random.default_rng(seed)
    (folder / "heatmaps").mkdir(parents=True)
    yy, xx = (np.mgrid[0:SIDE, 0:SIDE] + 0.5) / SIDE
    rows, truth = [], []
    w, h = size
    for c, (name, parts) in enumerate(classes.items()):
        for n, place in parts:
            for _ in range(n):
                i = len(rows)
                ox, oy = rng.uniform(0.2, 0.8, 2)
                px, py = (ox, oy) if place == "object" else place
                heat = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / 0.006) + rng.random((SIDE, SIDE)) * 0.1
                rel = f"heatmaps/{name}_{i:03d}.jpg.gradcam@layer4.1.npy"
                np.save(folder / rel, (heat / heat.max()).astype(np.float32))
                path = f"{name}_{i:03d}.jpg"
                rows.append(PredictionRow(index=i, path=path, width=w, height=h, method="gradcam", layer="layer4[1]",
                                          heatmap=rel if heatmaps else None, pred_index=c, pred_label=name, score=0.9,
                                          target_index=c, target_label=name, target_score=0.9))
                truth.append((path, (ox - 0.1) * w, (oy - 0.1) * h, (ox + 0.1) * w, (oy + 0.1) * h, name))
    columns = ["index", "path", "width", "height", "pred_index", "pred_label", "score", "target_index", "target_label",
               "target_score", "method", "layer", "output", "heatmap", "status", "error", "note"]
    write_rows(folder / "predictions.csv", columns, rows)
    boxes = folder.parent / f"{folder.name}-truth.csv"
    boxes.write_text("path,x0,y0,x1,y1,label\n" + "".join(f"{p},{a:.0f},{b:.0f},{c:.0f},{d:.0f},{n}\n"
                                                          for p, a, b, c, d, n in truth))
    return folder, boxes


@pytest.fixture(scope="module")
def watermarked(tmp_path_factory):
    """"star": 30 maps on their objects, 12 at the top-left corner; "circle": 40 on their objects."""
    return make_run(tmp_path_factory.mktemp("audit") / "run",
                    {"star": [(30, "object"), (12, (0.08, 0.08))], "circle": [(40, "object")]})


def rows_by_path(folder):
    return {r["path"]: r for r in read_csv(folder / "audit.csv")}


def test_a_watermark_cluster_is_found_and_flagged_with_its_pictures(cli, watermarked):
    run, _ = watermarked
    r = cli("audit", run, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data == json.loads((run / "audit.json").read_text())  # --json prints what audit.json holds
    star = next(c for c in data["classes"] if c["class"] == "star")
    flagged = [k for k in star["clusters"] if k["flags"]]
    assert len(flagged) == 1 and flagged[0]["size"] == 12 and flagged[0]["where"] == "top-left corner"
    flag = flagged[0]["flags"][0]
    assert flag["flag"] == "fixed-place" and "look at" in flag["text"]
    assert flag["look_at"] and all(p.startswith("star_") and int(p[5:8]) >= 30 for p in flag["look_at"])
    circle = next(c for c in data["classes"] if c["class"] == "circle")
    assert not any(k["flags"] for k in circle["clusters"])  # objects anywhere: nothing fixed
    rows = rows_by_path(run)
    assert len(rows) == 82
    corner = [p for p in rows if p.startswith("star_") and int(p[5:8]) >= 30]
    assert all("fixed-place" in rows[p]["flags"] for p in corner)
    assert not any("fixed-place" in r["flags"] for p, r in rows.items() if p not in corner)
    assert len({rows[p]["cluster"] for p in corner}) == 1
    assert "FLAG" in r.stderr and "1 cluster(s) flagged" in r.stderr  # the summary goes to stderr under --json


def test_spectral_clusters_match_scikit_learn_and_the_eigengap_counts_them():
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    from camcli.auditing.spectral import spectral_clusters

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:16, 0:16] / 15
    for n in (90, 3000):  # the dense eigensolver, and LOBPCG on the sparse graph
        centres = [(0.1, 0.1), (0.5, 0.5), (0.85, 0.3)]
        truth = rng.integers(0, 3, n)
        x = np.stack([np.exp(-((xx - centres[t][0] - rng.normal(0, 0.05)) ** 2
                               + (yy - centres[t][1] - rng.normal(0, 0.05)) ** 2) / 0.02).ravel()
                      + rng.random(256) * 0.1 for t in truth]).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        found = spectral_clusters(x)
        assert found.k == 3 and found.chosen == "eigengap"
        theirs = SpectralClustering(3, affinity="nearest_neighbors", n_neighbors=10, random_state=0).fit(x).labels_
        assert adjusted_rand_score(theirs, found.labels) > 0.95
        assert adjusted_rand_score(truth, found.labels) > 0.95


def test_one_strategy_is_one_cluster():
    from camcli.auditing.spectral import spectral_clusters

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:16, 0:16] / 15
    x = np.stack([np.exp(-((xx - a) ** 2 + (yy - b) ** 2) / 0.02).ravel() + rng.random(256) * 0.1
                  for a, b in rng.uniform(0.15, 0.85, (300, 2))]).astype(np.float32)
    assert spectral_clusters(x / np.linalg.norm(x, axis=1, keepdims=True)).k == 1


def test_truth_boxes_clear_a_place_where_the_objects_are_and_flag_evidence_off_them(cli, tmp_path):
    # every "sun" sits at the top-left and its maps peak there: the objects are there, no shortcut
    run, _ = make_run(tmp_path / "run", {"sun": [(20, (0.12, 0.12))]})
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x0,y0,x1,y1,label\n" + "".join(f"sun_{i:03d}.jpg,5,5,50,50,sun\n" for i in range(20)))
    without = camcli.audit(run)
    assert [f.kind for _, k in without.flagged for f in k.flags] == ["fixed-place"]  # a hypothesis without truth
    cleared = camcli.audit(run, boxes)
    assert cleared.flagged == []
    # the same maps, the objects elsewhere: the evidence is off them, and fixed while they move
    _, truth = make_run(tmp_path / "run2", {"sun": [(20, (0.12, 0.12))]})
    moved = camcli.audit(tmp_path / "run2", truth)
    kinds = sorted(f.kind for _, k in moved.flagged for f in k.flags)
    assert kinds == ["fixed-place", "off-object"]
    assert all(r["correct"] == "true" for r in read_csv(tmp_path / "run2" / "audit.csv"))


def test_the_gates(cli, watermarked):
    run, truth = watermarked
    assert cli("audit", run, "--fail-on", "largest", "-q").exit_code == 0  # the watermark is the smaller cluster
    r = cli("audit", run, "--fail-on", "any", "-q")
    assert r.exit_code == 1 and "gate failed" in r.stderr and "star" in r.stderr
    r = cli("audit", run, "--fail-on", "biggest", "-q")
    assert r.exit_code == 2 and "fail_on" in r.stderr.replace("-", "_")


def test_by_true_class_gives_each_cluster_its_share_of_correct_predictions(tmp_path):
    run, truth = make_run(tmp_path / "run", {"star": [(20, "object")], "circle": [(20, "object")]})
    # ten circles were truly stars: grouped by true class, star's maps include them, half of them wrong
    text = truth.read_text().splitlines()
    text = [t.replace(",circle", ",star") if t.startswith("circle_") and int(t[7:10]) < 30 else t for t in text]
    truth.write_text("\n".join(text) + "\n")
    report = camcli.audit(run, truth, by="true")
    star = next(c for c in report.as_dict()["classes"] if c["class"] == "star")
    assert star["maps"] == 30
    assert sum(k["correct"] * k["size"] for k in star["clusters"]) == pytest.approx(20, abs=0.01)
    with pytest.raises(UsageError, match="truth"):
        camcli.audit(run, by="true")


def test_an_odd_map_is_an_outlier(tmp_path):
    run, _ = make_run(tmp_path / "run", {"star": [(40, (0.5, 0.5))]})
    odd = run / "heatmaps" / "star_007.jpg.gradcam@layer4.1.npy"
    heat = np.zeros((SIDE, SIDE), np.float32)
    heat[-3:, :] = 1.0  # a band along the bottom, unlike every other map
    np.save(odd, heat)
    camcli.audit(run)
    rows = rows_by_path(run)
    assert rows["star_007.jpg"]["outlier"] == "true"
    assert sum(r["outlier"] == "true" for r in rows.values()) <= 3


def test_a_run_without_saved_maps_is_refused_with_the_command_that_makes_them(cli, tmp_path):
    run, _ = make_run(tmp_path / "run", {"star": [(5, "object")]}, heatmaps=False)
    r = cli("audit", run)
    assert r.exit_code == 2 and "--save-heatmap" in r.stderr and "Traceback" not in r.stderr
    assert not (run / "audit.csv").exists()
    r = cli("audit", tmp_path / "nothing")
    assert r.exit_code == 2 and "output folder" in r.stderr


def test_a_link_planted_in_the_run_folder_is_not_followed(cli, watermarked, tmp_path):
    run, _ = watermarked
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (run / "audit.csv").unlink(missing_ok=True)
    os.symlink(victim, run / "audit.csv")
    assert cli("audit", run, "-q").exit_code == 0
    assert victim.read_text() == "keep me"
    assert not (run / "audit.csv").is_symlink() and "fixed-place" in (run / "audit.csv").read_text()


def test_the_page_shows_each_cluster_and_its_flag(cli, watermarked):
    run, _ = watermarked
    r = cli("audit", run, "--html", "-q")
    assert r.exit_code == 0, r.stderr
    page = (run / "audit.html").read_text()
    assert page.count('class="cluster"') >= 3 and "fixed place" in page and "star_0" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_a_detection_runs_boxes_are_where_its_objects_are(cli, tmp_path):
    """Per box class: a detector's maps that sit in a corner while its boxes move are flagged
    off-object without any truth file, since each row says where its box is."""
    from camcli.output.csvfile import write_rows
    from camcli.output.rows import DETECTION_COLUMNS, DetectionRow

    rng = np.random.default_rng(3)
    run = tmp_path / "det"
    (run / "heatmaps").mkdir(parents=True)
    yy, xx = (np.mgrid[0:SIDE, 0:SIDE] + 0.5) / SIDE
    rows = []
    for i in range(24):
        ox, oy = rng.uniform(0.3, 0.8, 2)
        px, py = (0.06, 0.06) if i % 2 else (ox, oy)  # every other box's map sits in the corner
        heat = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / 0.006)
        rel = f"heatmaps/d{i:02d}.jpg.layercam@fpn.npy"
        np.save(run / rel, heat.astype(np.float32))
        rows.append(DetectionRow(index=i, path=f"d{i:02d}.jpg", width=200, height=200, detections=1, det_rank=1,
                                 det_index=1, det_label="car", det_score=0.9, method="layercam", layer="fpn",
                                 heatmap=rel, det_box=((ox - 0.1) * 200, (oy - 0.1) * 200, (ox + 0.1) * 200,
                                                       (oy + 0.1) * 200)))
    write_rows(run / "detections.csv", list(DETECTION_COLUMNS), rows)
    r = cli("audit", run, "--json", "-q")
    assert r.exit_code == 0, r.stderr
    (car,) = json.loads(r.stdout)["classes"]
    flagged = [k for k in car["clusters"] if k["flags"]]
    assert len(flagged) == 1 and flagged[0]["size"] == 12
    assert {f["flag"] for f in flagged[0]["flags"]} == {"fixed-place", "off-object"}
    assert all(int(p[1:3]) % 2 for p in flagged[0]["exemplars"])


def test_the_report_page_of_an_audited_run_has_the_audit(cli, watermarked):
    run, truth = watermarked
    assert cli("audit", run, "-q").exit_code == 0
    r = cli("evaluate", run, "--truth", truth, "--html", "-q")
    assert r.exit_code == 0, r.stderr
    page = (run / "report.html").read_text()
    assert "Audit: strategies per class" in page and "fixed place" in page


def test_a_page_of_many_classes_shows_the_flagged_ones_in_full(cli, tmp_path):
    classes = {f"c{i:02d}": [(6, "object")] for i in range(34)}
    classes["c07"] = [(8, (0.9, 0.9))]  # one class whose maps all sit in the bottom-right corner
    run, _ = make_run(tmp_path / "run", classes)
    assert cli("audit", run, "--html", "-q").exit_code == 0
    page = (run / "audit.html").read_text()
    assert page.count('<div class="cls">') == 1 and "<h3>c07" in page
    assert page.count("<tr><td>c") == 33  # every other class, a table row without pictures
    assert page.count("data:image/jpeg") < 20


def test_a_map_that_cannot_be_read_is_a_warning_and_a_row_not_a_crash(cli, tmp_path):
    run, _ = make_run(tmp_path / "run", {"star": [(12, "object")]})
    (run / "heatmaps" / "star_003.jpg.gradcam@layer4.1.npy").unlink()
    (run / "heatmaps" / "star_004.jpg.gradcam@layer4.1.npy").write_bytes(b"not a map")
    r = cli("audit", run, "--json")
    assert r.exit_code == 0, r.stderr
    assert "2 map(s) could not be read" in r.stderr and "Traceback" not in r.stderr
    rows = rows_by_path(run)
    assert len(rows) == 12 and rows["star_003.jpg"]["flags"] == rows["star_004.jpg"]["flags"] == "unreadable"
    assert rows["star_003.jpg"]["cluster"] == "" and rows["star_005.jpg"]["cluster"] == "0"
    assert len(json.loads(r.stdout)["unreadable"]) == 2


def test_a_place_between_a_coarse_maps_cells_is_one_place(tmp_path):
    """A 14 x 14 layer map of a badge between cells peaks in one cell or a neighbour from picture
    to picture (0.1 of the picture apart on the diagonal); the audit still sees one place."""
    run, _ = make_run(tmp_path / "run", {"star": [(12, (2 / SIDE, 2 / SIDE))], "circle": [(12, "object")]})
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] + 0.5
    for i in range(12):
        heat = np.exp(-((xx - 2) ** 2 + (yy - 2) ** 2) / 2.0) + rng.random((SIDE, SIDE)) * 0.03
        np.save(run / "heatmaps" / f"star_{i:03d}.jpg.gradcam@layer4.1.npy", heat.astype(np.float32))
    rows = camcli.audit(run).as_dict()["classes"]
    star = next(c for c in rows if c["class"] == "star")
    assert [f["flag"] for k in star["clusters"] for f in k["flags"]] == ["fixed-place"]


def test_maps_with_a_strong_watermark_and_a_weaker_object_join_the_watermarks_strategy(tmp_path):
    """As on a model that learnt a watermark and still sees the object: half the class's maps hold
    both (the watermark stronger), half only the object; the audit splits them and flags the first."""
    run, _ = make_run(tmp_path / "run", {"star": [(30, "object")]})
    rng = np.random.default_rng(4)
    yy, xx = (np.mgrid[0:SIDE, 0:SIDE] + 0.5) / SIDE
    for i in range(0, 30, 2):
        ox, oy = rng.uniform(0.35, 0.85, 2)
        heat = (np.exp(-((xx - 0.1) ** 2 + (yy - 0.1) ** 2) / 0.006) + 0.7 * np.exp(-((xx - ox) ** 2 + (yy - oy) ** 2) / 0.01)
                + rng.random((SIDE, SIDE)) * 0.1)
        np.save(run / "heatmaps" / f"star_{i:03d}.jpg.gradcam@layer4.1.npy", heat.astype(np.float32))
    camcli.audit(run)
    rows = rows_by_path(run)
    flagged = {p for p, r in rows.items() if "fixed-place" in r["flags"]}
    assert flagged == {f"star_{i:03d}.jpg" for i in range(0, 30, 2)}


def test_a_small_watermark_group_in_a_large_class_is_found(tmp_path):
    """60 watermark maps among 3,000 (the sparse eigensolver's size): a large graph's own smallest
    eigenvalues are tiny too, and the watermark's group must still stand apart."""
    run, _ = make_run(tmp_path / "run", {"star": [(2940, "object"), (60, (0.08, 0.08))]})
    report = camcli.audit(run)
    (flagged,) = [k for _, k in report.flagged]
    assert flagged.size == 60 and {f.kind for f in flagged.flags} == {"fixed-place"}


def test_truth_written_relative_to_a_parent_folder_matches_and_missing_truth_is_said(cli, tmp_path):
    run, truth = make_run(tmp_path / "run", {"sun": [(20, (0.12, 0.12))]})
    lines = truth.read_text().splitlines()
    shifted = tmp_path / "shifted.csv"  # paths as written from the folder above, one image left out
    shifted.write_text("\n".join([lines[0]] + [f"data/{line}" for line in lines[1:] if not line.startswith("sun_005")]) + "\n")
    r = cli("audit", run, "--truth", shifted, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["images_without_truth"] == ["sun_005.jpg"] and "1 image(s) have no ground truth" in r.stderr
    kinds = sorted(f["flag"] for c in data["classes"] for k in c["clusters"] for f in k["flags"])
    assert kinds == ["fixed-place", "off-object"]  # the objects were read: the evidence is off them
