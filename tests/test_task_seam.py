"""The task seam (camcli/tasks/): a fourth task defined here, outside the package, is registered
and runs through ``camcli.explain``, ``camcli explain`` and ``camcli evaluate`` end to end with
its own CSV, overlays, NDJSON and metric; and the three tasks camcli ships are asked, not named.

The fourth task is a dense regression: a counting model returns a density map (N, 1, H, W) whose
sum is the count of objects in the image (crowd counting, cell counting). Each map explains the
count. Nothing in camcli/ knows of it.
"""

from __future__ import annotations

import ast
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camcli
from camcli import tasks
from camcli.engine.explainer import Explainer
from camcli.engine.layer_names import display_name, resolve_layer
from camcli.engine.stream import iter_results
from camcli.engine.targets import Target, select_output
from camcli.errors import UsageError
from camcli.evaluation.metrics import Metric, register_metric, unregister_metric
from camcli.output.paths import atomic_write, inside, overlay_rel
from camcli.output.render import encode_png, overlay
from camcli.tasks import Built, Task
from conftest import read_csv

SIZE = 64
SQUARES = {"left.png": (4, 8, 24, 28), "right.png": (38, 30, 58, 50), "bottom.png": (20, 40, 40, 60)}


class DensityNet(nn.Module):
    """A counter of bright 20 x 20 squares: its density is 1/400 on a white pixel and 0 on black,
    so that it sums to the number of squares, and a right map of the count lies on the square."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.density = nn.Sequential(nn.Conv2d(4, 1, 1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[:, :, 1, 1] = 1.0  # every channel: the pixel's brightness...
            self.features[0].bias[:] = torch.tensor([0.0, -1.0, -2.0, -3.0])  # ...above a threshold of its own
            self.density[0].weight[:] = 1 / 2400  # a white pixel's channels sum to 3 + 2 + 1 + 0 = 6
            self.density[0].bias.zero_()

    def forward(self, x):
        return self.density(self.features(x))


class CountTarget(Target):
    """The count: the density map's sum, read as a one-output regression head."""

    def read(self, output) -> torch.Tensor:
        t = select_output(output, self.output).float()
        if t.dim() != 4 or t.shape[1] != 1:
            raise UsageError(f"a counting model returns a density map (N, 1, H, W), got {tuple(t.shape)}")
        return t.sum((1, 2, 3))[:, None]


@dataclass
class CountRow:
    """A row of counts.csv: its own columns, nothing of predictions.csv's."""

    index: int
    path: str
    status: str = "ok"
    error: str = ""
    note: str = ""
    width: int | None = None
    height: int | None = None
    count: float | None = None
    method: str | None = None
    layer: str | None = None
    output: str | None = None
    peak_x: int | None = None
    peak_y: int | None = None
    heatmap: str | None = None
    empty_map: bool | None = None
    warning: str | None = None

    COLUMNS = ("index", "path", "width", "height", "count", "method", "layer", "output", "peak_x", "peak_y",
               "status", "error")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def explained(self) -> bool:
        return self.width is not None

    def cells(self) -> dict[str, str]:
        return {c: "" if getattr(self, c) is None else (f"{getattr(self, c):.4f}" if c == "count"
                                                        else str(getattr(self, c))) for c in self.COLUMNS}


class Counting(Task):
    name = "counting"
    description = "a counter: a density map per image whose sum is the count; each map explains the count"
    csv_stem = "counts"
    takes = frozenset({"input_size", "mean", "std", "resize"})
    stated_from = ("classification",)  # a model of one's own: `task` counting says what it is
    evaluated_from_runs_only = "a counting run is evaluated from its counts.csv"

    def open(self, settings, device, loaded, methods) -> Built:
        layers = [resolve_layer(loaded.model, spec) for spec in settings.layer] if settings.layer else ["features"]
        target = CountTarget("regression", labels=["count"], fixed=(0,))
        explainer = Explainer(loaded.model, layers, methods, strict=settings.strict, target=target)
        explainer.validate(loaded.input_size, device)
        return Built(loaded, layers, methods, explainer, target=0)

    def explained(self, session) -> str:
        return "density map: each map explains the count (the map's sum)"

    def results(self, session, items, skip, plan):
        s = session.settings
        return iter_results(session.loaded, session.explainer, items, batch_size=s.batch_size, workers=0,
                            device=session.device, target=0, topk=1, skip=skip,
                            batches=plan.batches if plan else None, resize=s.resize, seed=s.seed)

    def header(self, settings, session) -> list[str]:
        return list(CountRow.COLUMNS)

    def write(self, result, out: Path, settings) -> list[CountRow]:
        if result.status != "ok":
            return [CountRow(result.item.index, result.item.rel, status="error", error=result.error)]
        rows = []
        for m in result.maps:
            heat = m.upsampled()
            rel = overlay_rel(result.item.rel, m.method, display_name(m.layer))
            atomic_write(inside(out, rel), encode_png(overlay(result.image, heat)))
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            rows.append(CountRow(result.item.index, result.item.rel, width=result.width, height=result.height,
                                 count=result.target_score, method=m.method, layer=display_name(m.layer),
                                 output=rel, peak_x=int(x), peak_y=int(y), empty_map=m.empty))
        return rows

    def evaluate_run(self, folder, truth, normalized, tolerance, gates):
        """Two metrics: pointing (the share of maps whose peak lies on the image's object, its truth
        box) and the count's mean absolute error, a metric of the task's own."""
        from camcli.evaluation.evaluate import Report
        from camcli.evaluation.scoring import Evaluation, Summary, check_gates

        truth_rows = {r["path"]: r for r in read_csv(Path(truth))}
        rows = [r for r in read_csv(folder / "counts.csv") if r["status"] == "ok"]
        groups: dict[tuple[str, str], list[tuple[bool, float]]] = {}
        for r in rows:
            t = truth_rows[r["path"]]
            x0, y0, x1, y1 = (int(t[k]) for k in ("x0", "y0", "x1", "y1"))
            hit = x0 <= int(r["peak_x"]) < x1 and y0 <= int(r["peak_y"]) < y1
            groups.setdefault((r["method"], r["layer"]), []).append((hit, abs(float(r["count"]) - int(t["count"]))))
        summaries = [Summary(method, layer, images=len(v), pointing=sum(h for h, _ in v) / len(v),
                             extra={"count_error": sum(e for _, e in v) / len(v)})
                     for (method, layer), v in groups.items()]
        asked = {k: v for k, v in gates.items() if v is not None and k != "min_recall"}
        return Report(Evaluation([], summaries), folder, check_gates(summaries, **asked), task=self.name,
                      gates=asked)


@pytest.fixture
def counting():
    task = tasks.register(Counting())
    register_metric(COUNT_ERROR)
    yield task
    tasks.unregister(task.name)
    unregister_metric(COUNT_ERROR.key)


#: the counting task's own metric: lower is better
COUNT_ERROR = Metric("count_error", "count error", higher_is_better=False)


@pytest.fixture
def scenes(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    with open(tmp_path / "truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "count", "x0", "y0", "x1", "y1"])
        for name, (x0, y0, x1, y1) in SQUARES.items():
            image = np.zeros((SIZE, SIZE, 3), np.uint8)
            image[y0:y1, x0:x1] = 255
            Image.fromarray(image).save(folder / name)
            w.writerow([name, 1, x0, y0, x1, y1])
    return folder


def options() -> dict:
    # plain [0, 1] pixels: mean 0, std 1
    return dict(task="counting", input_size=SIZE, mean="0,0,0", std="1,1,1", workers=0, batch_size=2)


def test_a_task_defined_outside_camcli_runs_explain_and_evaluate_end_to_end(counting, scenes, tmp_path, cli):
    out = tmp_path / "run"
    results = list(camcli.explain(scenes, model=DensityNet(), method=["gradcam", "layercam"], out=out, **options()))
    assert [r.status for r in results] == ["ok"] * 3
    # its own CSV, with its own columns and no other task's
    assert not (out / "predictions.csv").exists()
    rows = read_csv(out / "counts.csv")
    assert list(rows[0]) == list(CountRow.COLUMNS)
    assert len(rows) == 6 and {r["method"] for r in rows} == {"gradcam", "layercam"}
    for r in rows:
        x0, y0, x1, y1 = SQUARES[r["path"]]
        assert float(r["count"]) == pytest.approx(1.0, rel=0.01)  # one square
        assert (out / r["output"]).is_file()  # its overlays
        assert x0 <= int(r["peak_x"]) < x1 and y0 <= int(r["peak_y"]) < y1, r  # the maps land on the square
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["task"] == "counting" and "the map's sum" in manifest["head"]

    # the command line: NDJSON from the task's entries, then evaluate with the task's metric and gate
    again = tmp_path / "cli-run"
    factory = tmp_path / "net.py"
    factory.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_task_seam import DensityNet\n\n"
                       "def build():\n    return DensityNet()\n" % str(Path(__file__).parent))
    r = cli("explain", scenes, "-m", f"{factory}:build", "--task", "counting", "--input-size", str(SIZE),
            "--mean", "0,0,0", "--std", "1,1,1", "--workers", "0", "--json", "-o", again)
    assert r.exit_code == 0, r.output
    images = [json.loads(line) for line in r.stdout.splitlines() if '"image"' in line]
    assert len(images) == 3 and all(rec["maps"][0]["overlay"].startswith("overlays/") for rec in images)
    report = cli("evaluate", again, "--truth", tmp_path / "truth.csv", "--min-pointing", "0.9")
    assert report.exit_code == 0, report.output
    assert "count error" in report.stdout and "pointing" in report.stdout  # the table lists the task's metric
    found = json.loads(cli("evaluate", again, "--truth", tmp_path / "truth.csv", "--json").stdout)
    assert [s["pointing"] for s in found["summaries"]] == [1.0] and found["summaries"][0]["count_error"] < 0.01
    # a gate on the task's maps fails with exit 1, as camcli's own do
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("path,count,x0,y0,x1,y1\n" + "".join(f"{n},1,0,0,2,2\n" for n in SQUARES))
    failed = cli("evaluate", again, "--truth", shifted, "--min-pointing", "0.9")
    assert failed.exit_code == 1 and "gate failed" in failed.stderr and "pointing game 0.000" in failed.stderr


def test_a_registered_tasks_settings_and_names_are_checked_like_camclis_own(counting, scenes, tmp_path):
    # a setting it does not take is refused, naming the task that takes it
    with pytest.raises(UsageError, match="min_area: a segmentation or volume-segmentation run.s setting, which a counting run does not take"):
        list(camcli.explain(scenes, model=DensityNet(), min_area=0.2, **options()))
    # it cannot be stated of a model another task claims
    with pytest.raises(UsageError, match="task counting, but .* is a detector: it returns boxes; leave task out"):
        from test_detection import tiny_detector
        list(camcli.explain(scenes, model=tiny_detector(), task="counting"))
    # nor share another task's CSV, nor take a built-in name
    clash = Counting()
    clash.name = "other"
    with pytest.raises(ValueError, match="writes counts.csv"):
        tasks.register(clash)
    with pytest.raises(ValueError, match="camcli's own"):
        tasks.register(type("Shadow", (Counting,), {"name": "detection"})())


def test_an_unknown_task_lists_the_registered_ones_too(counting, scenes):
    with pytest.raises(UsageError, match="task must be auto, counting, detection, segmentation, video, volume, volume-segmentation or classification"):
        list(camcli.explain(scenes, model=DensityNet(), task="countin"))


def test_no_module_outside_camcli_tasks_compares_task_names():
    """Tasks are asked, not named: a task's name is compared only in camcli/tasks/."""
    names = {"classification", "detection", "segmentation"}
    package = Path(camcli.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        if package / "tasks" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
                literals = {p.value for p in parts if isinstance(p, ast.Constant)}
                literals |= {e.value for p in parts if isinstance(p, (ast.Tuple, ast.List, ast.Set))
                             for e in p.elts if isinstance(e, ast.Constant)}
                if literals & names:
                    found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not found, found
