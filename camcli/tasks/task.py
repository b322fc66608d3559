"""The protocol of a task: what camcli asks of one kind of model, from loading to evaluation.

A task is a :class:`Task` subclass with one instance (a module's ``TASK``, or one handed to
:func:`camcli.tasks.register`). Class attributes describe it without torch (its name, CSV,
the settings it takes); methods build its session, explain images, write files and rows, and
score a finished run. Defaults here are what a task that needs nothing special does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from camcli.errors import UsageError
from camcli.output.rows import Row

if TYPE_CHECKING:
    import torch

    from camcli.engine.images import ImageItem
    from camcli.engine.loaded import LoadedModel
    from camcli.engine.methods import CAMMethod
    from camcli.engine.stream import ImageResult
    from camcli.output.rows import PredictionRow
    from camcli.run.memory import MemoryPlan
    from camcli.session import ExplainSession
    from camcli.settings.fields import ExplainSettings

#: the settings some task takes and another does not, and the value that leaves each out; a task
#: refuses one given that it does not take (it would change nothing), in one line
TASK_SETTINGS: dict[str, Any] = {
    # a classifier's: its class, head and scoring, input framing, explaining options, CSV columns
    "target": None, "head": "auto", "threshold": None, "explain_topk": None, "output": None,
    "target_image": None, "target_embedding": None, "direction": "higher", "score": "logit",
    "aug_smooth": False, "fuse": None, "resize": "stretch", "input_size": None, "mean": None, "std": None,
    "topk": 1, "boxes": False, "caption": False, "panel": False, "precision": "fp32",
    # a segmenter's: which classes count as found, what their score sums over, the mask file
    "min_area": 0.01, "background": False, "region": None, "save_mask": False,
    # a detector's: which boxes are kept and how their maps are drawn
    "score_threshold": 0.5, "max_detections": 20, "detection_maps": "each",
    # a volume's: how its values become the model's input
    "window": None, "scaling": "percentiles",
    # a video's: which clips are cut from it and how
    "clips": "one", "clip_len": None, "clip_fps": None, "frames_fps": None,
}


@dataclass
class Built:
    """What a task's :meth:`Task.open` makes of a loaded model: the pieces of its session."""

    loaded: LoadedModel  # the model as the session uses it (its labels may be the task's own)
    layers: list[str]
    methods: list[CAMMethod]
    explainer: Any  # has map_keys(), channels, and what the task's results() feeds it
    target: int | None = None  # the class explained in every image, where one is
    notes: list[str] = field(default_factory=list)  # what the run's log should say about how the model is run
    context: Any = None  # anything else the task's results() need (a segmentation run's regions)


class Task:
    """One kind of model. Subclass it, set the class attributes and override what differs."""

    #: the ``task`` setting's value and run.json's ``task``
    name: ClassVar[str]
    #: one line for ``--help`` and listings: what such a model does and what each map explains
    description: ClassVar[str]
    #: the model, in words, for messages: "a detector: it returns boxes"
    model_in_words: ClassVar[str] = ""
    #: the run's CSV without .csv (predictions, detections, segments)
    csv_stem: ClassVar[str]
    #: its CSV's row: the columns every task shares and its own (camcli.output.rows)
    row_type: ClassVar[type] = Row
    #: output folders of its own besides overlays, heatmaps and panels (masks)
    folders: ClassVar[tuple[str, ...]] = ()
    #: which of :data:`TASK_SETTINGS` it takes
    takes: ClassVar[frozenset[str]] = frozenset()
    #: the inputs it explains (:attr:`ImageItem.kind <camcli.engine.discovery.ImageItem.kind>`):
    #: ``image``, ``scan`` (3D) or ``video``; found inputs of another kind are left out of its runs
    inputs: ClassVar[str] = "image"

    def gathered(self, items: list[ImageItem]) -> list[ImageItem]:
        """The run's inputs as this task takes them (a video task makes a folder of frames one clip);
        as found by default."""
        return items

    #: tasks a model may be loaded as and still be stated as this one with ``task``
    stated_from: ClassVar[tuple[str, ...]] = ()
    #: run.json keeps the labels beside the model (saved masks hold class indices)
    records_labels: ClassVar[bool] = False
    #: ``None``: ``camcli evaluate`` scores this task's maps as a classifier's (against boxes, also
    #: explaining images itself, with faithfulness and sanity); otherwise the task scores its finished
    #: runs itself (:meth:`evaluate_run`) and this says so to whoever asks for more
    evaluated_from_runs_only: ClassVar[str | None] = None

    #: ``camcli models`` marks this task's models with its name
    tagged_in_listings: ClassVar[bool] = True

    def known_models(self) -> list[str]:
        """The architectures camcli builds by name for this task (``camcli models``)."""
        return []

    # -- recognising and settings -----------------------------------------------------------------

    def claims(self, loaded: LoadedModel) -> bool:
        """Whether a loaded model is this task's without ``task`` saying so, from the model itself
        (a task that only ``task`` names, of a model another task claims, claims none)."""
        return False

    def not_stated_of(self, found: Task, loaded: LoadedModel) -> str:
        """Why ``task`` cannot make ``found``'s model one of this task."""
        return (f"`task` {self.name}, but {loaded.architecture} is {found.model_in_words or found.name}; "
                "leave `task` out")

    def refuse_settings(self, settings: ExplainSettings) -> None:
        """Refuse, in one line, a setting given that this task does not take."""
        given = [name for name, left_out in TASK_SETTINGS.items()
                 if name not in self.takes and getattr(settings, name) != left_out]
        if given:
            raise UsageError(self.refusal(given))

    #: why this task's runs take none of the settings they refuse, in a few words (the refusal's end)
    refusal_reason: ClassVar[str] = ""

    def refusal(self, given: list[str]) -> str:
        """``min_area``: a segmentation run's setting, which a classification run does not take (...)."""
        from camcli import tasks

        owners = list(dict.fromkeys(t.name for n in given for t in tasks.all_tasks() if n in t.takes))
        whose = (f"a {' or '.join(owners)} run's setting" if owners else "no task's setting") if len(given) == 1 else \
            (f"settings of a {' or '.join(owners)} run" if owners else "no task's settings")
        return (f"{', '.join(f'`{n}`' for n in given)}: {whose}, which a {self.name} run does not take"
                + (f" ({self.refusal_reason})" if self.refusal_reason else ""))

    # -- building -----------------------------------------------------------------------------------

    def default_method(self, loaded: LoadedModel) -> tuple[str, str] | None:
        """The method a run without ``method`` takes and why (the log line says it), or ``None``
        for camcli's default (Grad-CAM)."""
        return None

    def layer_defaults(self, loaded: LoadedModel, infos) -> tuple[str | None, set[str]]:
        """For ``camcli layers``: the default layer (``None``: none found) and the layers where the
        original CAM applies."""
        return None, set()

    def earlier_layer(self, loaded: LoadedModel, layer: str, device: torch.device) -> str | None:
        """A layer before ``layer`` to suggest when its maps are all empty (``None``: none to name),
        found on a dummy image."""
        from camcli.models.layer_search import earlier_layer

        return earlier_layer(loaded.model, loaded.input_size, layer, device)

    def open(self, settings: ExplainSettings, device: torch.device, loaded: LoadedModel,
             methods: list[CAMMethod]) -> Built:
        """The session's pieces: layers, a checked explainer, notes."""
        raise NotImplementedError

    def input_in_words(self, loaded: LoadedModel) -> str:
        """The log line's input size ("input 224x224; "), empty where the model sizes images itself."""
        return f"input {loaded.input_size[0]}x{loaded.input_size[1]}; "

    def plan_in_words(self, session: ExplainSession, plan: MemoryPlan) -> str:
        """The log line's account of how the inputs flow (batches, decoders, writers)."""
        return plan.describe()

    def explained(self, session: ExplainSession) -> str:
        """What each map explains, in words (the log line and run.json's ``head``)."""
        raise NotImplementedError

    def empty_cause(self, session: ExplainSession) -> str | None:
        """Why maps are empty at every layer when the cause is the model and not the layer."""
        return None

    def results(self, session: ExplainSession, items: Sequence[ImageItem], skip: Collection[str],
                plan: MemoryPlan | None) -> Iterator[ImageResult]:
        """The images' results in input order."""
        raise NotImplementedError

    # -- writing ------------------------------------------------------------------------------------

    def header(self, settings: ExplainSettings, session: ExplainSession) -> list[str]:
        """The CSV's columns for this run."""
        raise NotImplementedError

    def write(self, result: ImageResult, out: Path, settings: ExplainSettings) -> list[PredictionRow]:
        """One image's files, and its rows (runs in the writer threads)."""
        raise NotImplementedError

    def json_entries(self, rows: list[PredictionRow]) -> dict:
        """What ``--json``'s object for an explained image holds beyond path, status and error."""
        first = rows[0]
        return {"width": first.width, "height": first.height, "note": first.note or None,
                "maps": [{"method": r.method, "layer": r.layer, "overlay": r.output, "heatmap": r.heatmap,
                          "empty_map": r.empty_map, "warning": r.warning} for r in rows]}

    def gallery_card(self, rows: list[PredictionRow]) -> tuple[list[tuple[str, str]], float | None, str]:
        """An image's gallery card: its maps' (button, file), the score it is sorted by, and the
        prediction line (HTML-escaped)."""
        import html

        first = rows[0]
        maps = [(f"{r.method}@{r.layer}", r.output) for r in rows if r.output]
        return maps, None, html.escape(first.note or "")

    def gallery_more(self, rows: list[PredictionRow], out: Path) -> str:
        """HTML a card shows under its maps' buttons (a scan's slice sliders; ``out``: the run's
        folder, where the files it shows are); none by default."""
        return ""

    # -- evaluation ---------------------------------------------------------------------------------

    def evaluate_run(self, folder: Path, truth, normalized: bool, tolerance: float, gates: dict):
        """Score a finished run of this task against ``truth`` (``gates``: min_iou, min_pointing,
        min_recall; ``None`` where not asked): a :class:`~camcli.evaluation.evaluate.Report`. Asked
        only of tasks with ``evaluated_from_runs_only``."""
        raise NotImplementedError

    #: what a row of its evaluation.csv is about (the command line says "per-box values: ...")
    evaluated_per: ClassVar[str] = "image"

    def print_report(self, report, console, fmt) -> bool:
        """Print the report's figures and tables on ``console``; ``False``: print them as a
        classifier's."""
        return False


def entries_by_rank(rows: list, rank, head, extra) -> list[dict]:
    """``--json``'s objects for the things an image's rows explain (its boxes, its classes), best
    first, each with its maps (method x layer): ``rank(row)`` (``None``: a row that explains
    nothing), ``head(row)`` the thing's own keys, ``extra(row)`` the map's keys of the task's own."""
    entries: dict[int, dict] = {}
    for r in rows:
        if rank(r) is None:
            continue
        entry = entries.setdefault(rank(r), {**head(r), "maps": []})
        entry["maps"].append({"method": r.method, "layer": r.layer, "overlay": r.output, "heatmap": r.heatmap,
                              **extra(r), "empty_map": r.empty_map, "warning": r.warning})
    return list(entries.values())
