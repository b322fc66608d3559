"""``audit.html``: what ``camcli audit`` found, as one self-contained page (and a section of report.html).

Per method, layer and class: the class's mean map, and per cluster its mean map, its exemplars
(the run's overlays of the maps nearest the cluster's centre), its share of correct predictions
and its flags in words. Built from ``audit.json``'s content, so ``camcli evaluate --html`` adds
the same section to ``report.html`` for a run that was audited. Pictures are inline JPEG; no
script, no network.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from camcli.output.paths import atomic_write, inside
from camcli.output.render import overlay

THUMB = 130
FULL_CLASSES = 30  # more classes than this: only those with a flag get pictures (1,000 classes would be 100 MB)
MEAN_SIDE = 120

STYLE = """
.audit .cls{background:#fff;border:1px solid #ddd;padding:8px;margin:12px 0}
.audit .row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
.audit figure{margin:0;font-size:.75rem;width:130px} .audit figure img{max-width:130px;max-height:130px;display:block}
.audit figure.mean img{width:120px;height:120px} .audit figure.mean{width:120px}
.audit .cluster{border-top:1px solid #eee;padding-top:6px;margin-top:6px}
.audit .flag{color:#a40;font-weight:600;margin:2px 0} .audit .path{overflow-wrap:anywhere}
"""


def _e(text) -> str:
    return html.escape(str(text))


def _jpeg(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


def mean_map_picture(grid: list[list[float]], side: int = MEAN_SIDE) -> str:
    """A mean map as a coloured square (the overlays' colour map over grey), inline JPEG."""
    heat = cv2.resize(np.asarray(grid, np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    grey = np.full((side, side, 3), 128, np.uint8)
    return _jpeg(overlay(grey, np.clip(heat, 0, 1), alpha=0.75))


def _thumb(folder: Path, rel: str | None) -> str | None:
    if not rel:
        return None
    try:
        bgr = cv2.imread(str(inside(folder, rel)), cv2.IMREAD_COLOR)
    except ValueError:  # a name, or a link, that would leave the folder: no picture
        return None
    if bgr is None:
        return None
    scale = THUMB / max(bgr.shape[:2])
    small = cv2.resize(bgr, (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    return _jpeg(small[..., ::-1])


def section(audit: dict, folder: Path, overlays: dict[tuple[str, str, str], str] | None = None) -> str:
    """The audit section: ``audit`` as ``AuditReport.as_dict()`` gives it; ``overlays`` maps
    (path, method, layer) to the run's overlay (read from the run's CSV when not given)."""
    if overlays is None:
        overlays = run_overlays(folder)
    parts = [f'<section class="audit"><h2>Audit: strategies per class</h2><p class="note">{_e(intro(audit))}</p>']
    classes = audit["classes"]
    shown = classes if len(classes) <= FULL_CLASSES else [c for c in classes if any(k["flags"] for k in c["clusters"])]
    rest = [c for c in classes if c not in shown]
    if rest:
        parts.append(f'<p class="note">{len(classes)} classes: the {len(shown)} with a flagged cluster are shown in full, '
                     'the others in the table below (audit.json and audit.csv hold them all).</p>')
    for c in shown:
        head = (f"{c['class']}: {c['maps']} maps, {len(c['clusters'])} cluster(s) ({c['clusters_chosen_by']}), "
                f"{len(c['outliers'])} outlier(s), {c['method']} at {c['layer']}")
        table = "".join(
            f'<tr><td class="n">{k["cluster"]}</td><td class="n">{k["size"]} ({k["share"]:.0%})</td>'
            f'<td class="n">{"" if k["correct"] is None else format(k["correct"], ".0%")}</td><td>{_e(k["peaks"])}</td>'
            f'<td class="{"fail" if k["flags"] else ""}">{_e(", ".join(f["flag"] for f in k["flags"]))}</td></tr>'
            for k in c["clusters"])
        parts.append(f'<div class="cls"><h3>{_e(head)}</h3><div class="row">'
                     f'<figure class="mean"><img alt="mean map" src="data:image/jpeg;base64,{mean_map_picture(c["mean_map"])}">'
                     f"<figcaption>the class's mean map</figcaption></figure><table><tr><th>cluster</th><th>maps</th>"
                     f"<th>correct</th><th>peaks</th><th>flags</th></tr>{table}</table></div>")
        for k in c["clusters"]:
            correct = "" if k["correct"] is None else f", {k['correct']:.0%} correct"
            parts.append(f'<div class="cluster"><p><b>cluster {k["cluster"]}</b>: {k["size"]} maps ({k["share"]:.0%}){correct}; '
                         f'{_e(k["peaks"])}</p>')
            for f in k["flags"]:
                parts.append(f'<p class="flag">{_e(f["text"])}</p>')
            parts.append(f'<div class="row"><figure class="mean"><img alt="cluster mean map" '
                         f'src="data:image/jpeg;base64,{mean_map_picture(k["mean_map"])}"><figcaption>mean map</figcaption></figure>')
            for p in k["exemplars"]:
                data = _thumb(folder, overlays.get((p, c["method"], c["layer"])))
                img = f'<img alt="" src="data:image/jpeg;base64,{data}">' if data else ""
                parts.append(f'<figure>{img}<figcaption class="path">{_e(p)}</figcaption></figure>')
            parts.append("</div></div>")
        if c["outliers"]:
            parts.append('<div class="cluster"><p>outliers (far from every cluster):</p><div class="row">')
            for o in c["outliers"][:6]:
                data = _thumb(folder, overlays.get((o["path"], c["method"], c["layer"])))
                img = f'<img alt="" src="data:image/jpeg;base64,{data}">' if data else ""
                parts.append(f'<figure>{img}<figcaption class="path">{_e(o["path"])} ({o["distance"]:.2f})</figcaption></figure>')
            parts.append("</div></div>")
        parts.append("</div>")
    if rest:
        rows = "".join(f'<tr><td>{_e(c["class"])}</td><td>{_e(c["method"])} at {_e(c["layer"])}</td>'
                       f'<td class="n">{c["maps"]}</td><td class="n">{len(c["clusters"])}</td>'
                       f'<td class="n">{len(c["outliers"])}</td></tr>' for c in rest)
        parts.append('<div class="wide"><table><tr><th>class</th><th>maps of</th><th>maps</th><th>clusters</th>'
                     f'<th>outliers</th></tr>{rows}</table></div>')
    parts.append("</section>")
    return "".join(parts)


def intro(audit: dict) -> str:
    flagged = audit["flagged"]
    by = "the class each map explains" if audit["by"] == "explained" else "the images' true classes"
    return (f"Maps grouped by {by}, clustered spectrally (SpRAy); {flagged} cluster(s) flagged. A flag is a "
            "hypothesis to check on the pictures named with it, not a verdict.")


def run_overlays(folder: Path) -> dict[tuple[str, str, str], str]:
    from camcli.output.csvfile import read_rows
    from camcli.output.pictures import run_csv

    _, rows = read_rows(run_csv(folder))
    return {(r.path, r.method, r.layer): r.output for r in rows if r.ok and r.output}


def write_audit_page(audit: dict, folder: Path) -> Path:
    from camcli.output.report_page import _STYLE

    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>camcli audit: {_e(Path(audit["run"]).name)}'
            f'</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}{STYLE}</style>'
            f"</head><body><h1>camcli audit</h1>{section(audit, folder)}</body></html>\n")
    path = folder / "audit.html"  # a link planted at this name is replaced, never followed
    atomic_write(path, page.encode("utf-8"))
    return path
