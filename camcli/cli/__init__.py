"""The ``camcli`` command line: a thin layer over the Python API.

Data goes to stdout; logs, progress and errors go to stderr. Errors a user can fix print one
line and exit 2; failed images make the run exit 1; Ctrl-C exits 130 and SIGTERM 143
(:mod:`.signals`). The commands live in
:mod:`.explain`, :mod:`.evaluate` and :mod:`.listing`; their options that are settings come from
the settings fields (:mod:`.options`).
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from camcli import __version__
from camcli.cli.allocator import keep_freed_memory
from camcli.cli.signals import exit_code
from camcli.errors import EXIT_FAILURES, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, CamcliError, UsageErrors, first_line

EXIT_CODES = (
    "Exit codes: 0 every image explained; 1 some images failed (see the status column of "
    "predictions.csv, detections.csv or segments.csv); 2 usage or configuration error (bad path, model, layer, method, checkpoint); "
    "130 interrupted (Ctrl-C); 143 stopped by SIGTERM (timeout, docker stop, Kubernetes, SLURM)."
)

def _tasks_in_words() -> str:
    """One line per task camcli explains, from the tasks themselves (camcli/tasks/)."""
    from camcli import tasks

    first = sorted(tasks.all_tasks(), key=lambda t: t.name != tasks.FALLBACK)  # the usual case first
    return "\n\n".join(f"{t.name}: {t.description}." for t in first)


app = typer.Typer(
    name="camcli",
    help="Explain image models in bulk: class activation maps (CAM, Grad-CAM, Score-CAM, ...) for whole folders, "
         "on classifiers, detectors and segmenters.\n\n" + _tasks_in_words() + "\n\n"
         "Start with `camcli explain IMAGES --out DIR`; list methods with `camcli methods`, models with "
         "`camcli models`, a model's layers with `camcli layers MODEL`.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=True,
)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line, also in pipes


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def print_error(text: str) -> None:
    """``camcli: error: TEXT`` on stderr; the text is shown as it is (a ``[yolo]`` or a folder named
    ``photos[old]`` is not read as markup)."""
    message = Text("camcli: error:", style="bold red")
    message.append(" " + text)
    stderr_console().print(message, highlight=False)


def handle_errors(func):
    """Turn camcli's errors into one line on stderr (settings named as flags) and the documented exit code."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CamcliError as e:
            text = e.for_cli() if hasattr(e, "for_cli") else str(e)
            for line in (text.splitlines() if isinstance(e, UsageErrors) else [text]):  # several: one line each
                print_error(line)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:  # the file system refused something no check foresaw: one line, not a traceback
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            print_error(f"{e.strerror or first_line(e)}{where}")
            raise typer.Exit(EXIT_FAILURES) from None
        except KeyboardInterrupt as e:
            code = exit_code(e)
            stderr_console().print("camcli: terminated" if code == EXIT_TERMINATED else "camcli: interrupted")
            raise typer.Exit(code) from None
    return wrapper


def _version_callback(value: bool) -> None:
    """camcli's, torch's and torchvision's versions from the installed packages' metadata: at once,
    without importing torch (the device is named in every run's first log line)."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "not installed"

        print(f"camcli {__version__} (torch {installed('torch')}, torchvision {installed('torchvision')})")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option(
        "--version", "-V", callback=_version_callback, is_eager=True,
        help="Print camcli's, torch's and torchvision's versions, then exit.")] = None) -> None:
    """camcli: class activation maps for whole folders of images."""


from camcli.cli import audit, evaluate, explain, listing  # noqa: E402,F401  (registers the commands)


def main() -> None:
    """Console-script entry point."""
    keep_freed_memory()
    try:
        app()
    except KeyboardInterrupt as e:
        sys.exit(exit_code(e))
    except SystemExit as e:
        code = e.code
        sys.exit(code if code is not None else EXIT_OK)


__all__ = ["app", "main", "EXIT_USAGE"]
