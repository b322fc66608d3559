"""camcli in pipelines and by hand: NDJSON, stdin and list files, dry runs, captions, the
gallery in a real browser, and the Python API."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
import torchvision

import camcli
from conftest import read_csv


@pytest.fixture(scope="module")
def setup(small_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("iface")
    for name in ("r18.pth", "labels.txt"):
        shutil.copy(small_model / name, d / name)
    imgs = d / "imgs"
    (imgs / "sub dir").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("one.png", "two.jpg", "sub dir/three é.png"):
        cv2.imwrite(str(imgs / name), rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    (imgs / "bad.png").write_bytes(b"nope")
    return d


def args(setup):
    return ["--model", "resnet18", "--checkpoint", setup / "r18.pth", "--labels", setup / "labels.txt",
            "--input-size", "64", "--workers", "0", "--quiet"]


def test_json_is_one_object_per_image_then_a_summary(cli, setup, tmp_path):
    r = cli("explain", setup / "imgs", *args(setup), "--out", tmp_path / "o", "--json", "--boxes")
    assert r.exit_code == 1  # bad.png
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["type"] for x in lines] == ["image"] * 4 + ["summary"]
    by_path = {x["path"]: x for x in lines[:-1]}
    assert by_path["bad.png"]["status"] == "error" and by_path["bad.png"]["error"]
    good = by_path["sub dir/three é.png"]
    assert good["status"] == "ok" and good["prediction"]["label"] in ("apple", "banana", "cherry")
    assert good["maps"][0]["overlay"].startswith("overlays/sub dir/") and "box" in good["maps"][0]
    assert (tmp_path / "o" / good["maps"][0]["overlay"]).is_file()
    assert lines[-1] == {**lines[-1], "images": 4, "ok": 3, "failed": 1}


def test_paths_from_stdin_and_list_file(cli, setup, tmp_path):
    listing = f"{setup / 'imgs' / 'one.png'}\n{setup / 'imgs' / 'sub dir' / 'three é.png'}\n"
    r = cli("explain", "-", *args(setup), "--out", tmp_path / "o1", input=listing)
    assert r.exit_code == 0, r.stderr
    assert sorted(row["path"] for row in read_csv(tmp_path / "o1" / "predictions.csv")) == ["one.png", "sub dir/three é.png"]
    lst = tmp_path / "list.txt"
    lst.write_text("# my images\n" + str(setup / "imgs" / "two.jpg") + "\n")
    r = cli("explain", f"@{lst}", *args(setup), "--out", tmp_path / "o2")
    assert r.exit_code == 0 and [row["path"] for row in read_csv(tmp_path / "o2" / "predictions.csv")] == ["two.jpg"]


def test_dry_run_loads_no_model_and_shows_sources(cli, setup, tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('method = "cam"\ntopk = 2\n')
    monkeypatch.setenv("CAMCLI_TOPK", "3")
    import torchvision.models

    def loaded(*a, **k):
        raise RuntimeError("a model was loaded")
    # every way to a model goes through these two, looked up when called (not bound at import)
    monkeypatch.setattr(torch, "load", loaded)
    monkeypatch.setattr(torchvision.models, "get_model", loaded)
    checkpoint = setup / "r18.pth"
    # the traps spring on a real run
    r = cli("explain", setup / "imgs", "--checkpoint", checkpoint, "--out", tmp_path / "real", "--workers", "0")
    assert r.exit_code == 2 and "a model was loaded" in r.stderr
    with pytest.raises(RuntimeError, match="a model was loaded"):
        cli("explain", setup / "imgs", "--model", "resnet18", "--weights", "none", "--out", tmp_path / "real2",
            "--workers", "0")
    before = os.stat(checkpoint).st_atime_ns
    start = time.perf_counter()
    r = cli("explain", setup / "imgs", "--config", cfg, "--checkpoint", checkpoint, "--alpha", "0.3",
            "--out", tmp_path / "never", "--dry-run")
    assert time.perf_counter() - start < 5
    assert r.exit_code == 0, r.stderr
    assert not (tmp_path / "never").exists() and os.stat(checkpoint).st_atime_ns == before
    lines = {line.split("=")[0].strip(): line for line in r.stdout.splitlines() if "=" in line}
    assert "(command line)" in lines["alpha"] and "(environment)" in lines["topk"] and "3" in lines["topk"]
    assert f"(config {cfg})" in lines["method"] and "(default)" in lines["colormap"]
    assert "4 image(s):" in r.stdout and "three é.png" in r.stdout


def test_caption_keeps_the_original_size(cli, setup, tmp_path):
    r = cli("explain", setup / "imgs" / "one.png", *args(setup), "--out", tmp_path / "o", "--caption")
    row = read_csv(tmp_path / "o" / "predictions.csv")[0]
    plain = cli("explain", setup / "imgs" / "one.png", *args(setup), "--out", tmp_path / "p")
    assert r.exit_code == plain.exit_code == 0
    a = cv2.imread(str(tmp_path / "o" / row["output"]))
    b = cv2.imread(str(tmp_path / "p" / row["output"]))
    assert a.shape == b.shape == (70, 90, 3)
    band = max(14, min(70 // 8, round(70 / 12)))
    assert not np.array_equal(a[:band], b[:band]) and np.array_equal(a[band:], b[band:])


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_gallery_loads_in_headless_chromium(cli, setup, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found: install Debian's chromium (CI does) to test the HTML gallery")
    out = tmp_path / "o"
    r = cli("explain", setup / "imgs", *args(setup), "--out", out, "--html", "--method", "gradcam,cam", "--panel")
    assert r.exit_code == 1
    index = out / "index.html"
    assert index.is_file()
    dom = browse(browser, index.as_uri(), tmp_path)
    assert dom.count('class="card"') == 3 and dom.count('class="card error"') == 1
    for link in ("overlays/one.png.gradcam@layer4.1.png", "panels/sub%20dir/three%20%C3%A9.png.panel.png"):
        assert link in dom
    assert "4 image(s)" in dom and "3 ok" in dom and "1 failed" in dom and "model resnet18" in dom
    assert visible_cards(dom) == ["bad.png", "one.png", "sub dir/three é.png", "two.jpg"]
    # the controls keep their state in the address: filter, sort, the map shown, pages
    assert visible_cards(browse(browser, index.as_uri() + "#filter=failed", tmp_path)) == ["bad.png"]
    by_score = browse(browser, index.as_uri() + "#sort=score", tmp_path)
    rows = {r["path"]: float(r["score"]) for r in read_csv(out / "predictions.csv") if r["score"]}
    assert visible_cards(by_score)[:3] == sorted(rows, key=rows.get, reverse=True)
    cam = browse(browser, index.as_uri() + "#map=cam%40layer4%5B1%5D", tmp_path)
    shown = re.findall(r'<img loading="lazy" src="([^"]+)"', cam)
    assert len(shown) == 3 and all("cam@layer4.1" in s and "gradcam" not in s for s in shown)


def browse(browser: str, url: str, tmp_path) -> str:
    """The page's DOM after its script ran, in headless Chromium; no console errors allowed."""
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--allow-file-access-from-files", "--virtual-time-budget=3000",
         "--dump-dom", url], capture_output=True, text=True, timeout=120)
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert console_errors == []
    return proc.stdout


def visible_cards(dom: str) -> list[str]:
    """The paths of the cards shown, in page order."""
    cards = re.findall(r'<div class="card[^"]*" ([^>]*)>', dom)
    return [html.unescape(re.search(r'data-path="([^"]*)"', c).group(1)) for c in cards if "hidden" not in c]


def test_python_api_yields_results_without_writing(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = camcli.explain(setup / "imgs", model="resnet18", checkpoint=setup / "r18.pth", labels=setup / "labels.txt",
                         input_size=64, workers=0, method="gradcam,cam", topk=3)
    results = list(run)
    assert [r.item.rel for r in results] == ["bad.png", "one.png", "sub dir/three é.png", "two.jpg"]  # sorted
    assert results[0].status == "error"
    ok = results[1]
    assert ok.pred_label in ("apple", "banana", "cherry") and len(ok.topk) == 3  # topk means what --topk means
    assert [(m.method, m.heatmap.shape) for m in ok.maps] == [("gradcam", (70, 90)), ("cam", (70, 90))]
    assert (run.summary.images, run.summary.ok, run.summary.failed, run.summary.out) == (4, 3, 1, None)
    assert list(tmp_path.iterdir()) == []
    # the API honours hidden and max_pixels like the command line
    (setup / "imgs" / ".hidden.png").write_bytes((setup / "imgs" / "one.png").read_bytes())
    try:
        common = dict(model="resnet18", checkpoint=setup / "r18.pth", input_size=64, workers=0)
        assert len(list(camcli.explain(setup / "imgs", **common))) == 4
        found = {r.item.rel: r for r in camcli.explain(setup / "imgs", hidden=True, **common)}
        assert ".hidden.png" in found and len(found["one.png"].topk) == 1
        limited = {r.item.rel: r for r in camcli.explain(setup / "imgs", max_pixels=6000, **common)}
        assert "max-pixels" in limited["one.png"].error  # 90 x 70 = 6,300 pixels
    finally:
        (setup / "imgs" / ".hidden.png").unlink()
    with pytest.raises(TypeError, match="colour"):
        list(camcli.explain(setup / "imgs", colour="red"))


def test_python_api_writes_when_asked(setup, tmp_path):
    results = list(camcli.explain([setup / "imgs" / "one.png"], model="resnet18", checkpoint=setup / "r18.pth",
                                  input_size=64, workers=0, out=tmp_path / "o"))
    assert len(results) == 1 and (tmp_path / "o" / "predictions.csv").is_file()


def test_no_color_and_plain_stderr_in_pipes(setup, tmp_path):
    env = dict(os.environ, NO_COLOR="1")
    r = subprocess.run([sys.executable, "-m", "camcli", "explain", str(setup / "nope")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "\x1b[" not in r.stderr and "does not exist" in r.stderr and r.stdout == ""


def test_every_command_help_mentions_every_option(cli):
    import typer.main

    from camcli.cli import app
    group = typer.main.get_command(app)
    r = cli("--help")
    assert r.exit_code == 0
    for name in group.commands:
        assert name in r.stdout
    for name, command in group.commands.items():
        every = any("--help-all" in p.opts for p in command.params)  # --help shows the common options only
        r = cli(name, "--help-all" if every else "--help")
        assert r.exit_code == 0, name
        text = " ".join(r.stdout.split())
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in text, f"camcli {name} --help does not mention {opt}"
        # every default written into an option's help reaches the screen (Rich markup would
        # otherwise swallow "[default: ...]" as an unknown style tag)
        unboxed = " ".join(r.stdout.replace("\u2502", " ").split())  # help wrapped inside Rich's boxes
        for param in command.params:
            help_text = getattr(param, "help", None) or ""
            if "[default: " in help_text:
                default = help_text.split("[default: ", 1)[1].split("]", 1)[0]
                assert f"[default: {default}]" in unboxed, f"camcli {name} --help hides the default of {param.opts}"



@pytest.mark.slow
def test_help_answers_without_loading_torch():
    """`--help` and shell completion run the program: they must not wait for torch to load."""
    probe = ("import sys\n"
             "from camcli.cli import main\n"
             "sys.argv = ['camcli', *sys.argv[1:]]\n"
             "try:\n    main()\n"
             "except SystemExit:\n    pass\n"
             "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded', file=sys.stderr)\n")
    for args in (["--help"], ["explain", "--help"], ["evaluate", "--help"]):
        r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        assert "Usage" in r.stdout, args
        assert "torch not loaded" in r.stderr, f"camcli {' '.join(args)} imported torch"
    # the public API is still there, loaded on first use, and camcli.methods is the function
    r = subprocess.run([sys.executable, "-c", "import camcli, camcli.engine.methods.scorecam; camcli.explain; "
                        "print(sorted(camcli.methods())[:2], camcli.get_method('gradcam').name)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "['ablationcam', 'cam'] gradcam" in r.stdout, r.stderr

def test_merge_joins_shards_in_input_order(cli, setup, tmp_path):
    out = tmp_path / "o"
    for i in range(3):
        r = cli("explain", setup / "imgs", *args(setup), "--out", out, "--shard", f"{i}/3")
        assert r.exit_code in (0, 1)
    r = cli("merge", out)
    assert r.exit_code == 0 and "merged 4 rows" in r.stderr
    rows = read_csv(out / "predictions.csv")
    assert [row["index"] for row in rows] == ["0", "1", "2", "3"]
    (out / "predictions.part-002-of-003.csv").unlink()
    r = cli("merge", out)
    assert r.exit_code == 2 and "2 of 3 parts" in r.stderr


def test_gallery_pages_a_large_run(tmp_path):
    """150 images: pages of 60, the last with 30; the filter counts across all pages."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found: install Debian's chromium (CI does) to test the HTML gallery")
    from camcli.output.gallery import Gallery
    from camcli.output.rows import PredictionRow
    gallery = Gallery(tmp_path, {"model": {"architecture": "resnet18"}, "methods": ["gradcam"], "layers": ["layer4[1]"]})
    for i in range(150):
        if i % 50 == 7:
            gallery.add([PredictionRow(i, f"img_{i:03d}.png", status="error", error="not a recognised image file")])
        else:
            gallery.add([PredictionRow(i, f"img_{i:03d}.png", pred_label="cat", score=i / 150, method="gradcam",
                                       layer="layer4[1]", output=f"overlays/img_{i:03d}.png.gradcam@layer4.1.png",
                                       empty_map=i % 10 == 0)])
    gallery.close()
    url = (tmp_path / "index.html").as_uri()
    first = visible_cards(browse(browser, url, tmp_path))
    assert len(first) == 60 and first[0] == "img_000.png"
    last = browse(browser, url + "#page=3", tmp_path)
    assert len(visible_cards(last)) == 30 and "page 3 of 3 (150 image(s))" in last
    assert visible_cards(browse(browser, url + "#filter=failed", tmp_path)) == ["img_007.png", "img_057.png",
                                                                                   "img_107.png"]
    empty = visible_cards(browse(browser, url + "#filter=empty", tmp_path))
    assert empty == [f"img_{i:03d}.png" for i in range(0, 150, 10)]
    assert "147 ok" in last and "3 failed" in last and "15 with an empty map" in last
