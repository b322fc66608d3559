"""``camcli.evaluate``: everything ``camcli evaluate`` does, as one function the CLI calls.

>>> report = camcli.evaluate("runs/demo", truth="sample_images/boxes.csv", sanity=True)  # doctest: +SKIP
>>> [(s.method, s.pointing, s.sanity["final_spearman"]) for s in report.summaries]       # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from camcli.errors import UsageError
from camcli.geometry import DEFAULT_THRESHOLD, POINTING_TOLERANCE
from camcli.evaluation.scoring import Evaluation, Summary, check_gates, score, write_csv


@dataclass
class Report:
    """The scores, where they were written, and which gates failed."""

    evaluation: Evaluation
    folder: Path  # where evaluation.csv (and report.html) went
    gates_failed: list[str] = field(default_factory=list)
    sanity: object | None = None  # camcli.evaluation.sanity.SanityResult with --sanity
    settings: object | None = None  # the settings the model was rerun with (faithfulness, sanity)
    inputs: list[str] = field(default_factory=list)  # the images explained (when the model was run)
    html: Path | None = None
    gates: dict[str, float] = field(default_factory=dict)  # the gates asked for: min_iou -> 0.35, ...
    #: a detection run's detector figures (precision, recall; camcli.evaluation.detections), a
    #: segmentation run's segmenter figures (mIoU, per-class IoU; camcli.evaluation.segments)
    detector: object | None = None
    task: str = "classification"  # the run's task (camcli/tasks/): whose scorer made this report
    figures_name: str = "detector"  # the key of ``detector``'s figures in as_dict (segmenter)

    @property
    def summaries(self) -> list[Summary]:
        return self.evaluation.summaries

    def __repr__(self) -> str:
        """A line a notebook can show (the default repr printed every map's array)."""
        figures = "; ".join(f"{s.method} @ {s.layer}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in (("pointing", s.pointing), ("mean_iou", s.mean_iou)) if v is not None)
            for s in self.summaries)
        return (f"Report({self.task}, {len(self.summaries)} method x layer summaries: {figures or 'none'}; "
                f"{'passed' if self.passed else f'{len(self.gates_failed)} gate(s) failed'}; "
                f"{self.folder / 'evaluation.csv'})")

    @property
    def passed(self) -> bool:
        return not self.gates_failed

    def as_dict(self) -> dict:
        return {"summaries": [s.as_dict() for s in self.summaries], "gates": self.gates,
                "gates_failed": self.gates_failed,
                "passed": self.passed, "images_without_truth": self.evaluation.without_truth,
                "truth_without_image": self.evaluation.truth_without_image,
                "evaluation_csv": str(self.folder / "evaluation.csv"),
                **({"report_html": str(self.html)} if self.html else {}),
                **({self.figures_name: self.detector.as_dict()} if self.detector is not None else {})}


def evaluate(sources: str | os.PathLike | Sequence[str | os.PathLike], truth: str | os.PathLike, *,
             normalized: bool = False, config: str | os.PathLike | None = None,
             box_threshold: float = DEFAULT_THRESHOLD, pointing_tolerance: float = POINTING_TOLERANCE,
             box_mode: str = "largest", faithfulness: bool = False, steps: int = 16, sanity: bool = False,
             html: bool = False, out: str | os.PathLike | None = None, min_iou: float | None = None,
             min_pointing: float | None = None, min_accuracy: float | None = None,
             max_sanity_similarity: float | None = None, min_recall: float | None = None,
             log: Callable[[str], None] | None = None,
             progress: Callable[[str, int, int], None] | None = None, **settings) -> Report:
    """Score explanations against ground-truth boxes; see ``camcli evaluate --help`` for each option.

    ``sources``: a finished ``camcli explain`` output folder, or images to explain now with the
    model ``settings`` (``model``, ``checkpoint``, ``method``, ... as for :func:`camcli.explain`)
    or ``config``; ``model`` may be an ``nn.Module``, as for :func:`camcli.explain` (a run made
    from a module is rerun only with it). ``progress(stage, done, total)`` is called as images are explained (stage
``explaining``: images) and as the sanity checks go (``sanity``: explanation passes).
    """
    from camcli.evaluation.sources import gather_maps, sanity_of
    from camcli.evaluation.truth import read_truth
    from camcli.settings import EVALUATE_KEYS

    if box_mode not in ("largest", "all"):
        raise UsageError(f"--box-mode must be largest or all, got {box_mode!r}")
    unknown = sorted(k for k in settings if k not in EVALUATE_KEYS)
    if unknown:
        raise TypeError(f"evaluate() got unexpected option(s): {', '.join(unknown)}")
    if max_sanity_similarity is not None and not -1 <= max_sanity_similarity <= 1:
        raise UsageError(f"--max-sanity-similarity is a rank correlation in [-1, 1], got {max_sanity_similarity}")
    sanity = sanity or max_sanity_similarity is not None
    log = log or (lambda msg: None)
    paths = [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(s) for s in sources]
    task = run_task(paths)
    if task is not None:
        asked = {"faithfulness": faithfulness, "sanity": sanity, "min_accuracy": min_accuracy, "html": html,
                 "config": config, "out": out}
        refused = [f"`{name}`" for name, value in asked.items() if value not in (None, False)]
        refused += [f"`{k}`" for k, v in settings.items() if v is not None]
        if refused:
            raise UsageError(f"{', '.join(refused)}: not offered for a {task.name} run, which is scored from its "
                             "CSV and saved heatmaps")
        return task.evaluate_run(paths[0], truth, normalized, pointing_tolerance,
                                 dict(min_recall=min_recall, min_pointing=min_pointing, min_iou=min_iou))
    if min_recall is not None:
        raise UsageError("`min_recall` gates a detector's recall; this is not a detection run")
    from camcli.models.modules import handed_over

    settings["model"], module = handed_over(settings.get("model"))
    given = {k: settings.get(k) for k in EVALUATE_KEYS}
    config = Path(config) if config is not None else None
    maps, folder, rerun = gather_maps(paths, given, config, steps if faithfulness else None,
                                      Path(out) if out is not None else None, log, rerun=sanity,
                                      progress=(lambda done, total: progress("explaining", done, total))
                                      if progress else None, module=module)
    result = None
    if sanity:
        model_settings, inputs = rerun
        result = sanity_of(model_settings, inputs, log=log, module=module,
                           progress=(lambda done, total: progress("sanity", done, total)) if progress else None)
        attach_sanity(maps, result)
    sizes = {m.path: (m.width, m.height) for m in maps}
    gt = read_truth(truth, normalized=normalized, sizes=sizes)
    evaluation = score(maps, gt, threshold=box_threshold, mode=box_mode, tolerance=pointing_tolerance)
    if result is not None:
        add_sanity_summaries(evaluation.summaries, result)
    write_csv(folder / "evaluation.csv", evaluation)
    if not evaluation.rows:
        raise UsageError("nothing to score: no explained image has ground truth (check the paths in --truth)")
    gates = {k: v for k, v in dict(min_iou=min_iou, min_pointing=min_pointing, min_accuracy=min_accuracy,
                                   max_sanity_similarity=max_sanity_similarity).items() if v is not None}
    report = Report(evaluation, folder, check_gates(evaluation.summaries, **gates), result,
                    *(rerun or (None, [])), gates=gates)
    if html:
        from camcli.output.report_page import write_report
        report.html = write_report(report, folder / "report.html")
        if (folder / "index.html").is_file():  # the run's gallery links the report from now on
            from camcli.output.pictures import rebuild_pictures
            rebuild_pictures(folder)
    return report


def run_task(paths: list[Path]):
    """The task of a finished run when that task scores its runs itself (``evaluated_from_runs_only``:
    :meth:`~camcli.tasks.Task.evaluate_run`), or ``None``: classification runs and images to
    explain go through :func:`score`."""
    from camcli import tasks

    task = tasks.of_folder(paths[0]) if len(paths) == 1 else None
    return task if task is not None and task.evaluated_from_runs_only else None


def attach_sanity(maps, result) -> None:
    """Each map's similarity after the whole cascade, for its row in evaluation.csv."""
    if not result.cascade:
        return
    final = result.cascade[-1]
    index = {p: i for i, p in enumerate(result.paths)}
    for m in maps:
        key = (m.method, m.layer)
        i = index.get(m.path)
        if i is not None and key in final.spearman:
            m.sanity = (final.spearman[key][i], final.ssim[key][i])


def add_sanity_summaries(summaries: list[Summary], result) -> None:
    """Per method x layer: each step's mean and spread of both similarities, cascading and independent."""
    import statistics

    def steps(seq, key):
        out = []
        for step in seq:
            rho, ss = step.spearman[key], step.ssim[key]
            out.append({"randomised": step.randomised,
                        "spearman": statistics.fmean(rho), "spearman_std": statistics.pstdev(rho),
                        "ssim": statistics.fmean(ss), "ssim_std": statistics.pstdev(ss)})
        return out

    for s in summaries:
        key = (s.method, s.layer)
        if not result.cascade or key not in result.cascade[0].spearman:
            continue
        cascade = steps(result.cascade, key)
        s.sanity = {"units": result.units, "images": len(result.paths), "cascade": cascade,
                    "independent": steps(result.independent, key),
                    "final_spearman": cascade[-1]["spearman"], "final_ssim": cascade[-1]["ssim"]}
