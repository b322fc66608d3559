"""Every output flag of `camcli explain` does what its help says (small random model, 64 px)."""

import cv2
import numpy as np
import pytest

from conftest import SAMPLES, read_csv


def run(cli, small_model, out, *args, inputs=SAMPLES / "pairs"):
    return cli("explain", inputs, "--model", "resnet18", "--checkpoint", small_model / "r18.pth", "--input-size", "64",
               "--workers", "0", "--out", out, *args)


def test_panel_grid_and_png16_heatmaps_at_layer_size(cli, small_model, tmp_path):
    out = tmp_path / "o"
    r = run(cli, small_model, out, "--quiet", "--method", "gradcam,cam", "--panel", "--grid",
            "--save-heatmap", "png16", "--heatmap-size", "layer")
    assert r.exit_code == 0, r.stderr
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 16
    for row in rows:
        heat = cv2.imread(str(out / row["heatmap"]), cv2.IMREAD_UNCHANGED)
        assert heat.dtype == np.uint16 and heat.shape == (2, 2) and heat.max() == 65535  # normalised, layer size
        panel = cv2.imread(str(out / row["panel"]))
        assert panel.shape[1] > 2 * panel.shape[0]  # original + two overlays side by side
    sheets = sorted((out / "grid").glob("sheet_*.png"))
    assert [s.name for s in sheets] == ["sheet_001.png"]  # 16 thumbnails fit one sheet of 36


def test_boxes_all_rotated_and_drawn(cli, small_model, tmp_path):
    plain, boxed = tmp_path / "p", tmp_path / "b"
    assert run(cli, small_model, plain, "--quiet").exit_code == 0
    r = run(cli, small_model, boxed, "--quiet", "--box-mode", "all", "--box-rotated", "--draw-boxes",
            "--box-min-area", "0")
    assert r.exit_code == 0, r.stderr
    for row, ref in zip(read_csv(boxed / "predictions.csv"), read_csv(plain / "predictions.csv")):
        assert row["box_status"] == "ok"
        x0, y0, x1, y1 = (int(row[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
        assert 0 <= x0 < x1 <= int(row["width"]) and 0 <= y0 < y1 <= int(row["height"])
        assert len(row["box_rotated"].split()) == 4 and row["boxes_all"].split(";")[0] == f"{x0},{y0},{x1},{y1}"
        drawn, bare = cv2.imread(str(boxed / row["output"])), cv2.imread(str(plain / ref["output"]))
        assert drawn.shape == bare.shape and not np.array_equal(drawn, bare)


def test_softmax_score_changes_the_maps_and_verbose_logs_sources(cli, small_model, tmp_path):
    a = run(cli, small_model, tmp_path / "a", "--quiet", "--save-heatmap", "npy")
    b = run(cli, small_model, tmp_path / "b", "--score", "softmax", "--save-heatmap", "npy", "--verbose")
    assert a.exit_code == b.exit_code == 0
    assert "setting score = 'softmax' (from command line)" in b.stderr
    ra, rb = read_csv(tmp_path / "a" / "predictions.csv"), read_csv(tmp_path / "b" / "predictions.csv")
    assert [r["pred_index"] for r in ra] == [r["pred_index"] for r in rb]  # same predictions
    diffs = [np.abs(np.load(tmp_path / "a" / x["heatmap"]) - np.load(tmp_path / "b" / y["heatmap"])).max()
             for x, y in zip(ra, rb)]
    assert max(diffs) > 1e-3  # the softmax gradient mixes in the other classes


@pytest.mark.parametrize("args, needle", [
    (["--max-n", "8"], "scorecam, sscam and iscam only"),
    (["--save-heatmap", "tiff"], "npy or png16"),
    (["--box-mode", "some"], "largest or all"),
    (["--resume", "--overwrite"], "exclude each other"),
    (["--shard", "3/3"], "INDEX must be"),
])
def test_flag_misuse_is_a_usage_error(cli, small_model, tmp_path, args, needle):
    r = run(cli, small_model, tmp_path / "o", *args)
    assert r.exit_code == 2 and needle in r.stderr


def test_overlay_formats_quality_and_max_side(cli, small_model, tmp_path):
    """jpg and webp overlays decode to the image's size; --overlay-max-side shrinks overlays only:
    boxes and saved heatmaps stay in original pixels and equal the full-size run's."""
    img = tmp_path / "in" / "wide.png"
    img.parent.mkdir()
    rng = np.random.default_rng(4)
    cv2.imwrite(str(img), rng.integers(0, 256, (120, 300, 3), dtype=np.uint8))
    base = [img, "--model", "resnet18", "--checkpoint", small_model / "r18.pth", "--input-size", "64",
            "--workers", "0", "--quiet", "--boxes", "--draw-boxes", "--save-heatmap", "npy"]
    rows, sizes = {}, {}
    for name, extra in {"png": [], "jpg": ["--overlay-format", "jpg"],
                        "webp": ["--overlay-format", "webp", "--overlay-quality", "60"],
                        "small": ["--overlay-format", "jpg", "--overlay-max-side", "100"]}.items():
        out = tmp_path / name
        r = cli("explain", *base, "--out", out, *extra)
        assert r.exit_code == 0, r.stderr
        (rows[name],) = read_csv(out / "predictions.csv")
        picture = cv2.imread(str(out / rows[name]["output"]))
        assert picture is not None, name
        sizes[name] = (picture.shape[:2], (out / rows[name]["output"]).stat().st_size)
        assert np.load(out / rows[name]["heatmap"]).shape == (120, 300)
    assert rows["jpg"]["output"].endswith(".jpg") and rows["webp"]["output"].endswith(".webp")
    assert sizes["png"][0] == sizes["jpg"][0] == sizes["webp"][0] == (120, 300)
    assert sizes["small"][0] == (40, 100)
    assert sizes["jpg"][1] < sizes["png"][1] and sizes["small"][1] < sizes["jpg"][1]
    boxes = {k: tuple(rows[k][c] for c in ("box_x0", "box_y0", "box_x1", "box_y1")) for k in rows}
    assert len(set(boxes.values())) == 1  # boxes in original pixels, whatever the overlay
    r = cli("explain", *base, "--out", tmp_path / "bad", "--overlay-quality", "80")
    assert r.exit_code == 2 and "--overlay-quality applies to --overlay-format jpg and webp" in r.stderr
    r = cli("explain", *base, "--out", tmp_path / "bad2", "--overlay-format", "gif")
    assert r.exit_code == 2 and "--overlay-format must be png, jpg or webp" in r.stderr


def test_contact_sheet_captions_stay_readable_when_long():
    """A long path used to shrink its caption until it could not be read; now a caption line keeps
    most of its size, loses its middle, and the image, method and class each get their own line."""
    import numpy as np

    from camcli.output.figures import ContactSheets

    def ink_heights(text: str) -> list[int]:
        """The height of each run of text rows in the caption band, top to bottom."""
        sheets = ContactSheets(per_sheet=1)
        sheet = sheets.add(np.zeros((50, 50, 3), np.uint8), text)
        band = sheet[:sheet.shape[0] - sheets.thumb]  # the thumbnail's square is at the bottom
        dark = (band < 128).any(axis=(1, 2))
        heights, run = [], 0
        for row in dark:
            if row:
                run += 1
            elif run:
                heights, run = heights + [run], 0
        return heights + ([run] if run else [])

    short = ink_heights("a.png\ngradcam @ layer4[1]\ncat")
    long = ink_heights("some/deeply/nested/folder/with_a_long_name_00042.png\ngradcam @ layer4[1]\ncat")
    assert len(short) == 3 and len(long) == 3, (short, long)
    assert long[0] >= 0.7 * short[0], (short, long)
