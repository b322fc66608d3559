"""``camcli explain``: check the request, iterate a :class:`~camcli.run.Run`, show progress, print NDJSON, exit truthfully."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from camcli.cli import EXIT_CODES, app, handle_errors, stderr_console, stdout_console
from camcli.cli.options import SHORT_HELP_NOTE, HelpAll, settings_options
from camcli.cli.progress import DEFAULT_EVERY, Heartbeat, bar_view
from camcli.cli.signals import GracefulStop, InterruptOnTerm, exit_code
from camcli.cli.stdout import DataStdout
from camcli.errors import EXIT_FAILURES, EXIT_OK, UsageError, as_flags, gather
from camcli.settings.fields import FIELDS


@app.command(epilog=SHORT_HELP_NOTE + "\n\n" + EXIT_CODES)
@handle_errors
@settings_options(FIELDS)
def explain(
    inputs: Annotated[list[str], typer.Argument(help="Image files and folders (searched recursively); - reads paths from stdin, @FILE reads them from a list file.", show_default=False)],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file of defaults for any option (the command line wins); configs may name code to run (a model factory).", rich_help_panel="Run")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also log each failure and where each setting came from.", rich_help_panel="Run")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="NDJSON on stdout: an object per image as it finishes, then a summary.", rich_help_panel="Run")] = False,
    progress_every: Annotated[float, typer.Option("--progress-every", envvar="CAMCLI_PROGRESS_EVERY", min=0, hidden=True, help="When stderr is not a terminal (a pipe, a CI log, a cluster's output file): a progress line when the first image is done, then every this many seconds while explaining (done/total, rate, ETA, passes into a long image); 0 for none.", rich_help_panel="Run")] = DEFAULT_EVERY,
    help_all: HelpAll = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the settings (and where each came from) and the images; load and write nothing.", rich_help_panel="Run")] = False,
    **settings,
) -> None:
    """Explain every image: write overlays, predictions.csv (a detector's run: detections.csv, a map per box;
    a segmenter's: segments.csv, a map per class found) and run.json to --out.

    Examples:

      camcli explain sample_images/ --config configs/demo.toml

      camcli explain photos/ --model resnet50 --weights IMAGENET1K_V2 --method gradcam --layer "layer4[2]" --out runs/r50

      camcli explain photos/ --model resnet18 --checkpoint finetuned.pth --labels labels.txt --method cam

      camcli explain photos/ --model fasterrcnn_resnet50_fpn --score-threshold 0.6 --out runs/boxes

      camcli explain photos/ --model deeplabv3_resnet50 --save-mask --out runs/seg
    """
    from camcli.engine.discovery import discover, expand_inputs
    from camcli.settings import resolve
    from camcli.settings.checks import check

    # everything a user may have mistyped is checked before torch is imported (seconds), all at once
    resolved = resolve(settings, config, checked=False)
    found: dict = {}
    steps = [lambda: check(resolved), lambda: found.update(paths=expand_inputs(inputs))]
    if not dry_run:  # a dry run writes nothing: its folder may be full
        steps += [lambda: (_number_out(resolved), _check_out(resolved)),
                  lambda: found.update(items=discover(found["paths"], hidden=resolved.hidden, out=resolved.out))
                  if "paths" in found else None]
    gather(*steps)
    console = stderr_console()
    if dry_run:
        _dry_run(resolved, found["paths"], json_out)
        raise typer.Exit(EXIT_OK)
    paths, items = found["paths"], found["items"]

    log = (lambda msg: None) if resolved.quiet else (lambda msg: console.print(as_flags(msg), markup=False))
    if verbose:
        for key, origin in resolved.sources.items():
            if origin != "default":
                log(f"setting {key} = {getattr(resolved, key)!r} (from {origin})")
    with InterruptOnTerm(), DataStdout() as data:
        from camcli.output.ndjson import image_record, summary_record
        from camcli.run import Run

        run = Run(resolved, paths, log=log, items=items)
        show_bar = console.is_terminal and not resolved.quiet
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                      console=console, disable=not show_bar, transient=True) as bar, \
                GracefulStop(run) as stop, \
                Heartbeat(lambda: run.work, log=log, every=0 if show_bar or resolved.quiet else progress_every,
                          bar=bar_view(bar) if show_bar else None):
            for result, rows in run.outcomes():
                if json_out:
                    print(json.dumps(image_record(rows, run.session.task)), file=data.stream, flush=True)
                if verbose and result.status != "ok":
                    log(f"failed: {result.item.rel}: {result.error}")
        summary = run.summary
        if json_out:
            print(json.dumps(summary_record(summary)), file=data.stream, flush=True)
    if not resolved.quiet:
        rate = (summary.ok + summary.failed - summary.resumed) / summary.seconds if summary.seconds else 0.0
        unit = summary.unit
        if summary.resumed:
            console.print(f"resumed: {summary.resumed} {unit}(s) were already done", markup=False)
        console.print(f"explained {summary.ok} of {summary.images} {unit}(s), {summary.failed} failed"
                      f"{f', {summary.empty_maps} empty map(s)' if summary.empty_maps else ''} "
                      f"in {summary.seconds:.1f} s ({rate:.1f} {'img' if unit == 'image' else unit.split()[-1] + 's'}/s) -> "
                      f"{summary.out}", markup=False)
    if summary.failed and resolved.quiet:
        console.print(f"camcli: {summary.failed} {summary.unit}(s) failed; see {summary.out / summary.csv_name}",
                      markup=False)
    if summary.interrupted:
        if not resolved.quiet:
            console.print(f"camcli: stopped by {'SIGTERM' if stop.signum == signal.SIGTERM else 'Ctrl-C'}; "
                          f"`camcli explain ... --out {summary.out} --resume` continues", markup=False)
        raise typer.Exit(exit_code(stop.signum))
    raise typer.Exit(EXIT_FAILURES if summary.failed else EXIT_OK)


def _number_out(settings) -> None:
    """``out`` not given (by flag, config or environment): a new numbered folder, or with ``resume``
    the latest; shards must name theirs (each would number its own)."""
    from camcli.output.numbered import latest_run_folder, new_run_folder
    from camcli.run.shards import Shard

    if settings.sources.get("out", "default") != "default":
        return
    if Shard.of(settings).count > 1:
        raise UsageError("the shards of one run write into one folder: name it with `out`")
    settings.out = str(latest_run_folder() if settings.resume else new_run_folder())


def _check_out(settings) -> None:
    """The output folder's refusals (not empty, not a folder), before anything is loaded."""
    from camcli.output.folder import OutputLock, check_out_dir
    from camcli.run.shards import Shard

    shard, out = Shard.of(settings), Path(settings.out)
    OutputLock(out, shard.suffix).refuse_if_held()  # a folder being written is "in use", not "not empty"
    check_out_dir(out, shard.csv_name, settings.resume, settings.overwrite)


def _dry_run(settings, paths: list[str], as_json: bool) -> None:
    from camcli.engine.discovery import KIND_NOUNS, discover

    from camcli.settings.code import code_to_run

    items = discover(paths, hidden=settings.hidden, out=settings.out)
    values = {k: getattr(settings, k) for k in FIELDS}
    code = code_to_run(settings)
    if as_json:
        print(json.dumps({"type": "dry_run", "settings": values, "sources": settings.sources, "code": code,
                          "images": [i.path for i in items]}))
        return
    out = stdout_console()
    width = max(len(k) for k in values)
    for key, value in values.items():
        out.print(f"{key:<{width}} = {value!r:<40} ({settings.sources[key]})", markup=False)
    out.print("code run: " + ("; ".join(code) if code else "none beyond camcli, torch and torchvision"),
              markup=False)
    kinds = {KIND_NOUNS[k]: sum(i.kind == k for i in items) for k in dict.fromkeys(i.kind for i in items)}
    out.print(", ".join(f"{n} {noun}(s)" for noun, n in kinds.items()) + ":" if kinds else "0 image(s):", markup=False)
    for item in items:
        out.print(f"  {item.path}", markup=False)
