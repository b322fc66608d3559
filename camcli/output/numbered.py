"""A new output folder per run when the user names none: ``runs/explain``, ``runs/explain2``, ...

Running the same command twice then works (as Ultralytics' ``runs/detect/predict2``); a folder the
user names is theirs, and a full one is refused (``--resume``, ``--overwrite``). ``--resume``
without a folder continues the latest numbered one.
"""

from __future__ import annotations

import re
from pathlib import Path

from camcli.errors import UsageError

#: where runs go when --out is not given
DEFAULT_RUN_FOLDER = Path("runs") / "explain"


def numbered(base: Path) -> list[tuple[int, Path]]:
    """The existing ``base``, ``base2``, ``base3``... as (number, path), in number order."""
    base = Path(base)
    if not base.parent.is_dir():
        return []
    pattern = re.compile(re.escape(base.name) + r"(\d*)")
    found = []
    for path in base.parent.iterdir():
        m = pattern.fullmatch(path.name)
        if m and path.is_dir() and m.group(1) != "1" and not m.group(1).startswith("0"):
            found.append((int(m.group(1) or 1), path))
    return sorted(found)


def new_run_folder(base: Path = DEFAULT_RUN_FOLDER) -> Path:
    """The first of ``base``, ``base2``... that does not exist or is empty (a run that stopped
    before writing leaves an empty one, which is taken again)."""
    base = Path(base)
    taken = {n: path for n, path in numbered(base)}
    n = 1
    while n in taken and any(taken[n].iterdir()):
        n += 1
    return base if n == 1 else base.with_name(f"{base.name}{n}")


def latest_run_folder(base: Path = DEFAULT_RUN_FOLDER) -> Path:
    """The highest-numbered ``base``... that holds something: what ``--resume`` without a folder continues."""
    full = [path for _, path in numbered(base) if any(path.iterdir())]
    if not full:
        raise UsageError(f"`resume` without `out` continues the latest of {base}, {base}2, ...; there is none: "
                         "name the folder with `out`")
    return full[-1]
