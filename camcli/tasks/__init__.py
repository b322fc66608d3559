"""What a model does, as one module per task: the seam every task goes through.

A task (:class:`~camcli.tasks.task.Task`) says how it recognises a loaded model, its default
layer and method, which settings it takes, how its session is built and its images explained,
what its CSV is called and holds, how one image's files and rows are written, its NDJSON entries,
gallery card and evaluation. Session, Run, the API, evaluate, the gallery, NDJSON, shards, merge
and the output folder ask the task; no other module compares task names.

The registry is torch-free (``--task`` choices and the output folder's file names are known
before torch is imported): built-in tasks are imported when first asked for, and a task defined
elsewhere joins with :func:`register`.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from camcli.errors import UsageError
from camcli.tasks.task import TASK_SETTINGS, Built, Task

if TYPE_CHECKING:
    from camcli.engine.loaded import LoadedModel
    from camcli.settings.fields import ExplainSettings

__all__ = ["TASK_SETTINGS", "Built", "Task", "all_tasks", "by_csv", "csv_stems", "decide", "fallback", "get", "names", "of_folder",
           "register", "unregister"]

#: the tasks camcli ships, by name -> the module whose ``TASK`` it is (classification last: it
#: claims any model no other task claims)
BUILT_IN = {"detection": "camcli.tasks.detection", "segmentation": "camcli.tasks.segmentation",
            "video": "camcli.tasks.video", "volume": "camcli.tasks.volume",
            "volume-segmentation": "camcli.tasks.volume_segmentation",
            "classification": "camcli.tasks.classification"}
#: the task of a model no other task claims
FALLBACK = "classification"
_added: dict[str, Task] = {}
_loaded: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task (an instance of a :class:`Task` subclass); it is asked before the built-in ones
    whether it claims a model. Its CSV name must be its own."""
    if not isinstance(task, Task):
        raise TypeError(f"register() takes a Task instance, got {type(task).__name__}")
    if task.name in BUILT_IN or task.name == "auto":
        raise ValueError(f"task {task.name!r} is camcli's own; name yours otherwise")
    taken = {t.csv_stem: t.name for t in all_tasks() if t.name != task.name}
    if task.csv_stem in taken:
        raise ValueError(f"task {task.name!r} writes {task.csv_stem}.csv, as task {taken[task.csv_stem]!r} does")
    _added[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task added with :func:`register` (tests, notebooks)."""
    _added.pop(name, None)


def names() -> tuple[str, ...]:
    """Every task's name, the added ones first (torch-free)."""
    return (*_added, *BUILT_IN)


def get(name: str) -> Task:
    """The task called ``name``."""
    if name in _added:
        return _added[name]
    if name not in BUILT_IN:
        raise UsageError(f"unknown task {name!r}: camcli knows {', '.join(names())}")
    if name not in _loaded:
        _loaded[name] = import_module(BUILT_IN[name]).TASK
    return _loaded[name]


def fallback() -> Task:
    """The task of a model no other task claims, and of a folder with no run's CSV (a classifier)."""
    return get(FALLBACK)


def all_tasks() -> list[Task]:
    """Every task, in the order they are asked whether they claim a model."""
    return [get(name) for name in names()]


def csv_stems() -> tuple[str, ...]:
    """The CSV names (without ``.csv``) of every task's runs."""
    return tuple(t.csv_stem for t in all_tasks())


def by_csv(stem: str) -> Task | None:
    """The task whose runs write ``stem``.csv (``None``: no task's)."""
    return next((t for t in all_tasks() if t.csv_stem == stem), None)


def of_folder(folder: Path) -> Task | None:
    """The task of the finished run in ``folder`` (by the CSV it holds), or ``None``."""
    return next((t for t in all_tasks() if (folder / f"{t.csv_stem}.csv").is_file()), None)


def decide(settings: ExplainSettings, loaded: LoadedModel, refuse: bool = True) -> Task:
    """The run's task: the first that claims the loaded model, which ``task`` may state but not
    change (except to a task that says it can be stated of such a model: a classifier-shaped model
    of the user's own is a segmenter when ``task`` says so); the task then refuses the settings it
    does not take (``refuse`` False: only the task, as ``camcli layers`` asks)."""
    found = next(t for t in all_tasks() if t.claims(loaded))
    task = found
    if settings.task not in ("auto", found.name):
        task = get(settings.task)
        if found.name not in task.stated_from:
            raise UsageError(task.not_stated_of(found, loaded))
    if refuse:
        task.refuse_settings(settings)
    return task
