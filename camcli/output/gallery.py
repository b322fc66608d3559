"""``index.html``: a self-contained gallery of a run, usable by opening the file (no server).

Cards are appended as images finish and the file is renamed into place at the end, so the
gallery never holds more than one card in memory. Links are relative to the output folder.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

from camcli.output.rows import PredictionRow

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>camcli run</title>
<style>
body{font-family:system-ui,sans-serif;margin:1rem;background:#fafafa;color:#222}
h1{font-size:1.2rem} .grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:260px}
.card img{width:100%;height:auto;display:block;border-radius:3px}
.card .path{font-size:.8rem;word-break:break-all;color:#555}
.card .pred{font-weight:600} .card.error{border-color:#c33;background:#fff5f5}
.maps{display:flex;flex-wrap:wrap;gap:4px;font-size:.75rem}
</style></head><body>
<h1>camcli run</h1>
<div class="grid">
"""


def _href(rel: str) -> str:
    return html.escape(quote(rel, safe="/@"))


class Gallery:
    def __init__(self, out: Path) -> None:
        self.path = out / "index.html"
        self._tmp = out / ".index.html.tmp"
        self._file = open(self._tmp, "w", encoding="utf-8")
        self._file.write(_HEAD)
        self.cards = 0

    def add(self, rows: list[PredictionRow]) -> None:
        """One card for one image's rows."""
        first = rows[0]
        path = html.escape(first.path)
        if not first.ok and not first.output:
            self._file.write(f'<div class="card error"><div class="path">{path}</div>'
                             f'<div>error: {html.escape(first.error)}</div></div>\n')
        else:
            main = first.output or ""
            links = " ".join(f'<a href="{_href(r.output)}">{html.escape(r.method)} @ {html.escape(r.layer)}</a>'
                             for r in rows if r.output)
            panel = f' <a href="{_href(first.panel)}">panel</a>' if first.panel else ""
            pred = f"{html.escape(str(first.pred_label))} {first.score:.3f}" if first.score is not None else "-"
            self._file.write(
                f'<div class="card"><a href="{_href(main)}"><img loading="lazy" src="{_href(main)}" alt="{path}"></a>'
                f'<div class="path">{path}</div><div class="pred">{pred}</div>'
                f'<div class="maps">{links}{panel}</div></div>\n')
        self.cards += 1

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.write(f"</div>\n<p>{self.cards} image(s)</p>\n</body></html>\n")
        self._file.close()
        os.replace(self._tmp, self.path)
