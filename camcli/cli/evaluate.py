"""``camcli evaluate``: score explanations against ground-truth boxes; with gates, a CI check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from camcli.cli import app, handle_errors, stderr_console, stdout_console
from camcli.cli.options import SHORT_HELP_NOTE, HelpAll, settings_options
from camcli.cli.progress import DEFAULT_EVERY, Heartbeat, bar_view
from camcli.engine.work import current
from camcli.cli.signals import InterruptOnTerm
from camcli.cli.stdout import DataStdout
from camcli.errors import EXIT_FAILURES, EXIT_OK, as_flags
from camcli.settings.fields import EVALUATE_KEYS


@app.command(epilog=SHORT_HELP_NOTE + "\n\n" + "Exit codes: 0 every gate holds (or none was set); 1 a gate failed; 2 usage or configuration "
                     "error; 130 interrupted (Ctrl-C); 143 stopped by SIGTERM.")
@handle_errors
@settings_options(EVALUATE_KEYS)
def evaluate(
    sources: Annotated[list[Path], typer.Argument(help="A finished `camcli explain` output folder, or image files and folders to explain now.", show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Ground-truth boxes: CSV (path,x0,y0,x1,y1[,label]), a Pascal VOC folder, or COCO JSON; for a segmentation run, a folder of label masks (PNG of class indices, one per image by relative path); for a volume run, a folder of NIfTI label volumes on the scans' grids, or a CSV of boxes in the scan files' voxel indices (path,i0,j0,k0,i1,j1,k1).", rich_help_panel="Ground truth")],
    normalized: Annotated[bool, typer.Option("--normalized", help="CSV coordinates are fractions of the image size (0..1), not pixels.", rich_help_panel="Ground truth")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with model and method settings (as for explain), when explaining images here.", rich_help_panel="Model")] = None,
    box_threshold: Annotated[float, typer.Option("--box-threshold", hidden=True, help="Box from pixels >= this share of the map's maximum.", rich_help_panel="Metrics")] = 0.5,
    pointing_tolerance: Annotated[float, typer.Option("--pointing-tolerance", hidden=True, help="Pointing game: a maximum this many pixels outside a box still counts (15, as published; 0 is strict).", rich_help_panel="Metrics")] = 15.0,
    box_mode: Annotated[str, typer.Option("--box-mode", hidden=True, help="Which regions the IoU box covers: the largest region, or the best-matching of all. \\[choices: largest, all]", rich_help_panel="Metrics")] = "largest",
    faithfulness: Annotated[bool, typer.Option("--faithfulness", help="Also measure Average Drop, Increase in Confidence, deletion/insertion AUC (1 + 2 x (steps+1) forwards per map) and ROAD (18 imputed images per map); reruns the model.", rich_help_panel="Metrics")] = False,
    steps: Annotated[int, typer.Option("--steps", hidden=True, help="Deletion/insertion curve points.", rich_help_panel="Metrics")] = 16,
    sanity: Annotated[bool, typer.Option("--sanity", help="Sanity checks (Adebayo et al., 2018): re-initialise the model's weights from the classifier down, block by block (and one block at a time), explain the images again and report how similar the maps stay (Spearman, SSIM). One explanation pass per block, twice; seeded by --seed.", rich_help_panel="Metrics")] = False,
    min_iou: Annotated[Optional[float], typer.Option("--min-iou", help="Gate: exit 1 if a method's mean IoU is below this (a detection run: the matched boxes'; a segmentation run: the segmenter's mIoU).", rich_help_panel="Gates")] = None,
    min_pointing: Annotated[Optional[float], typer.Option("--min-pointing", help="Gate: exit 1 if a method's pointing-game hit rate (0..1) is below this.", rich_help_panel="Gates")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option("--min-accuracy", help="Gate: exit 1 if classification accuracy (0..1) is below this.", rich_help_panel="Gates")] = None,
    min_recall: Annotated[Optional[float], typer.Option("--min-recall", help="Gate, detection runs: exit 1 if the detector's recall at IoU 0.5 (0..1) is below this.", rich_help_panel="Gates")] = None,
    max_sanity_similarity: Annotated[Optional[float], typer.Option("--max-sanity-similarity", help="Gate: exit 1 if a method's maps after full randomisation still have a mean Spearman correlation above this with the trained model's (implies --sanity).", rich_help_panel="Gates")] = None,
    html: Annotated[bool, typer.Option("--html", help="Also write report.html next to evaluation.csv: settings, metrics, sanity and deletion/insertion charts, the worst misses. Self-contained; opens from the file system.", rich_help_panel="Output")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.", rich_help_panel="Output")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for evaluation.csv when explaining images here. \\[default: camcli-eval]", rich_help_panel="Output")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table or log lines on stderr.", rich_help_panel="Output")] = False,
    progress_every: Annotated[float, typer.Option("--progress-every", envvar="CAMCLI_PROGRESS_EVERY", min=0, hidden=True, help="When stderr is not a terminal: a progress line every this many seconds for each phase (explaining, sanity); 0 for none.", rich_help_panel="Output")] = DEFAULT_EVERY,
    help_all: HelpAll = None,
    **settings,
) -> None:
    """Score explanations against ground-truth boxes; with --min-* gates, a CI check.

    Metrics per method x layer: mean IoU of the heatmap's box, localisation accuracy (IoU >= 0.5),
    pointing game (the map's maximum inside a true box of the explained class), energy pointing
    game (share of the map inside those boxes), and classification accuracy when the truth has
    labels; with --faithfulness also Average Drop, Increase in Confidence, deletion and insertion AUC,
    and ROAD (Remove And Debias: the change in probability when the 10..90% most or least relevant
    pixels are replaced by noisy linear imputation; combined = (LeRF - MoRF) / 2, higher is better).
    With --sanity, the model-parameter randomisation test: how similar each method's maps stay
    when the weights are re-initialised from the top down; a map that does not change explains
    the architecture or the image, not what the model learnt.

    A detection run's folder is scored against truth boxes (the detector's recall and precision,
    each found box's maps); a segmentation run's (explained with --save-mask) against a folder of
    truth label masks (IoU per class and mIoU, each explained class's maps in its truth mask).

    Examples:

      camcli explain sample_images/ --config configs/demo.toml --method gradcam,cam --save-heatmap npy --out runs/demo

      camcli evaluate runs/demo --truth sample_images/boxes.csv --min-pointing 0.9

      camcli evaluate sample_images/ --config configs/demo.toml --method cam,gradcam,scorecam --truth sample_images/boxes.csv --json

      camcli evaluate runs/demo --truth sample_images/boxes.csv --sanity --faithfulness --html

      camcli evaluate runs/seg --truth truth_masks/ --min-iou 0.6 --min-pointing 0.8
    """
    import json as json_module

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from camcli.evaluation.evaluate import evaluate as run_evaluation
    from camcli.evaluation.scoring import fmt

    console = stderr_console()
    log = (lambda msg: None) if quiet else (lambda msg: console.print(as_flags(msg), markup=False))
    show_bar = console.is_terminal and not quiet
    with InterruptOnTerm(), DataStdout() as data, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                     console=console, disable=not show_bar, transient=True) as bar, \
            Heartbeat(current, log=log, every=0 if quiet or console.is_terminal else progress_every,
                      bar=bar_view(bar) if show_bar else None):  # each phase's meter: explaining, sanity
        report = run_evaluation(
            sources, truth, normalized=normalized, config=config, box_threshold=box_threshold,
            pointing_tolerance=pointing_tolerance, box_mode=box_mode, faithfulness=faithfulness, steps=steps,
            sanity=sanity, html=html, out=out, min_iou=min_iou, min_pointing=min_pointing, min_accuracy=min_accuracy,
            max_sanity_similarity=max_sanity_similarity, min_recall=min_recall, log=log,
            **{k: v for k, v in settings.items() if v is not None})
        if json_out:
            print(json_module.dumps(report.as_dict()), file=data.stream, flush=True)
    evaluation = report.evaluation
    from camcli import tasks
    from camcli.engine.discovery import KIND_NOUNS

    noun = KIND_NOUNS.get(tasks.get(report.task).inputs, "image")  # a volume run's inputs are scans
    if evaluation.without_truth:
        console.print(f"camcli: warning: {len(evaluation.without_truth)} {noun}(s) have no ground truth and were "
                      f"not scored, e.g. {', '.join(evaluation.without_truth[:3])}", markup=False)
    if evaluation.truth_without_image:
        console.print(f"camcli: warning: {len(evaluation.truth_without_image)} ground-truth path(s) match no "
                      f"explained {noun}, e.g. {', '.join(evaluation.truth_without_image[:3])}", markup=False)
    if not quiet:  # the tables are the command's data: stdout, unless --json holds it
        print_tables(report, fmt, to_stderr=json_out)
    for f in report.gates_failed:
        console.print(f"camcli: gate failed: {f}", markup=False)
    raise typer.Exit(EXIT_FAILURES if report.gates_failed else EXIT_OK)


def print_tables(report, fmt, to_stderr: bool = False) -> None:
    """The metrics tables (on stdout: they are what evaluate found; on stderr under --json), with
    --sanity the cascade's similarities step by step; where the files went on stderr."""
    from camcli import tasks

    logs = stderr_console()
    console = logs if to_stderr else stdout_console()
    if not console.is_terminal:
        console = Console(stderr=to_stderr, highlight=False, width=220)  # the whole table, also in files and logs
    task = tasks.get(report.task)
    if not task.print_report(report, console, fmt):
        _print_classifier_tables(report, console, fmt)
    logs.print(f"per-{task.evaluated_per} values: {report.folder / 'evaluation.csv'}", markup=False)
    if report.html:
        logs.print(f"report: {report.html}", markup=False)


def _print_classifier_tables(report, console, fmt) -> None:
    """A classifier's maps scored against boxes, per method x layer; with --sanity the cascade."""
    from rich.table import Table

    from camcli.evaluation.metrics import summary_table, table_rows

    evaluation = report.evaluation
    sanity = report.sanity is not None
    console.print(summary_table(f"camcli evaluate ({len(evaluation.rows)} maps)", *table_rows(report.summaries, fmt)))
    if sanity:
        with_sanity = [s for s in evaluation.summaries if s.sanity]
        steps = Table(title="sanity: Spearman ρ to the trained model's maps, cascading from the top", title_style="bold")
        steps.add_column("re-initialised down to")
        for s in with_sanity:
            steps.add_column(f"{s.method} @ {s.layer}", justify="right")
        for k, unit in enumerate(report.sanity.units[::-1]):
            steps.add_row(unit, *(fmt(s.sanity["cascade"][k]["spearman"]) for s in with_sanity))
        console.print(steps)
