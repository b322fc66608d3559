"""Model sources (camcli/models/sources.py): a fifth source defined here, outside the package, is
registered and loads a model for ``camcli.explain`` and ``camcli explain`` end to end; the
built-in sources are asked in order; and no module of camcli/models/ imports one that imports it
back.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import camcli
from camcli.engine.loaded import LoadedModel
from camcli.errors import UsageError
from camcli.models import sources
from camcli.models.sources import ModelRequest, ModelSource
from conftest import SAMPLES, read_csv

MODELS = Path(camcli.__file__).parent / "models"


class TinyNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class Zoo(ModelSource):
    """A team's model zoo: ``zoo/NAME`` builds a model its registry knows, with its labels and size."""

    name = "zoo"
    shelf = {"tiny": (TinyNet, ["cat", "dog", "bird", "fish"], 48)}

    def claims(self, request: ModelRequest) -> bool:
        return isinstance(request.spec, str) and request.spec.startswith("zoo/")

    def load(self, request: ModelRequest) -> LoadedModel:
        build, labels, side = self.shelf[request.spec.removeprefix("zoo/")]
        return LoadedModel(build(len(labels)), request.spec, labels, request.input_size or (side, side),
                           source={"kind": "zoo", "spec": request.spec})


@pytest.fixture
def zoo():
    source = sources.register_source(Zoo())
    yield source
    sources.unregister_source(source.name)


def test_a_source_defined_outside_camcli_loads_models_for_explain(zoo, cli, tmp_path):
    out = tmp_path / "api"
    results = list(camcli.explain(SAMPLES / "single", model="zoo/tiny", out=out, workers=0, layer="features"))
    assert results and all(r.status == "ok" for r in results)
    assert {r.pred_label for r in results} <= set(Zoo.shelf["tiny"][1])
    rows = read_csv(out / "predictions.csv")
    assert all((out / r["output"]).is_file() for r in rows)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["model"]["source"] == {"kind": "zoo", "spec": "zoo/tiny"}
    assert manifest["model"]["input_size"] == [48, 48]  # the zoo's size, not camcli's 224

    r = cli("explain", SAMPLES / "single", "-m", "zoo/tiny", "--workers", "0", "-o", tmp_path / "cli")
    assert r.exit_code == 0, r.output
    assert "model zoo/tiny" in r.stderr
    same = [(r["path"], r["pred_label"], r["score"]) for r in read_csv(tmp_path / "cli" / "predictions.csv")]
    assert same == [(r["path"], r["pred_label"], r["score"]) for r in rows]  # the same model, the same predictions


def test_sources_are_asked_added_first_then_camclis_in_order(zoo):
    names = [s.name for s in sources.all_sources()]
    assert names[0] == "zoo" and names[-1] == "classifier"  # classifiers by name: the source asked last
    assert names.index("module") < names.index("factory") < names.index("pickled") < names.index("classifier")
    sources.unregister_source("zoo")
    with pytest.raises(UsageError, match="unknown model 'zoo/tiny'"):
        camcli.models.load_model("zoo/tiny")


def _imports(path: Path) -> set[str]:
    """The camcli.models modules ``path`` imports, at its top or inside its functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "camcli.models":
                found |= {f"camcli.models.{a.name}" for a in node.names}
            elif node.module.startswith("camcli.models."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("camcli.models.")}
    return found


def test_no_module_of_camcli_models_imports_one_that_imports_it_back():
    graph = {f"camcli.models.{p.stem}": _imports(p) for p in MODELS.glob("*.py") if p.stem != "__init__"}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert not circles, {m: sorted(graph[m]) for m in circles}
