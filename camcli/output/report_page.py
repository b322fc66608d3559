"""``report.html``: what ``camcli evaluate`` found, as one self-contained page.

Opened from the file system, with no server and no network: charts are inline SVG, pictures
are inline PNG, the style is inline and there is no script. Links to the run's overlays are
relative to the page, which sits in the run's folder.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np

from camcli.errors import UsageError
from camcli.output.paths import atomic_write

WORST_PER_METHOD = 6
THUMB = 300
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222;max-width:1200px}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd}
.wide{overflow-x:auto} table{border-collapse:collapse;font-size:.85rem;background:#fff} th,td{border:1px solid #ddd;padding:3px 7px}
td.n{text-align:right;font-variant-numeric:tabular-nums} th{background:#f0f0f0}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:.9rem} dt{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:16px} .chart{background:#fff;border:1px solid #ddd;padding:6px}
.misses{display:flex;flex-wrap:wrap;gap:10px} .miss{background:#fff;border:1px solid #ddd;padding:6px;width:300px}
.miss img{width:100%;height:auto} .miss p{margin:2px 0;font-size:.8rem;overflow-wrap:break-word}
.miss p.path{overflow-wrap:anywhere}
.fail{color:#b00;font-weight:600} .pass{color:#070;font-weight:600} .note{color:#555;font-size:.85rem}
"""


def _fmt(v, percent: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if percent else f"{v:.3f}"


def _e(text) -> str:
    return html.escape(str(text))


def _tick(v: float) -> str:
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def line_chart(title: str, labels: list[str], series: list[tuple[str, list[float], list[float] | None]],
               y_range=(0.0, 1.0), width: int = 520, height: int = 260, y_label: str = "", ticks: int = 4) -> str:
    """An SVG line chart: ``series`` of (name, values, spread or None) over the x ``labels``."""
    left, right, top, bottom = 48, 36, 28, 70
    pw, ph = width - left - right, height - top - bottom
    lo, hi = y_range
    n = max(1, len(labels) - 1)

    def x(i):
        return left + pw * i / n

    def y(v):
        return top + ph * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(title)}"><title>{_e(title)}</title>',
             f'<text x="{left}" y="16" font-size="13" font-weight="600">{_e(title)}</text>']
    for k in range(ticks + 1):
        v = lo + (hi - lo) * k / ticks
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{_tick(v)}</text>')
    step = max(1, len(labels) // 12)
    for i, label in enumerate(labels):
        if i % step == 0 or i == len(labels) - 1:
            parts.append(f'<text transform="translate({x(i):.1f},{top + ph + 8}) rotate(45)" font-size="9">'
                         f'{_e(label)}</text>')
    if y_label:
        parts.append(f'<text transform="translate(12,{top + ph / 2}) rotate(-90)" font-size="10" '
                     f'text-anchor="middle">{_e(y_label)}</text>')
    for k, (name, values, spread) in enumerate(series):
        colour = _COLOURS[k % len(_COLOURS)]
        if spread:
            upper = [(x(i), y(v + s)) for i, (v, s) in enumerate(zip(values, spread))]
            lower = [(x(i), y(v - s)) for i, (v, s) in enumerate(zip(values, spread))][::-1]
            points = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower)
            parts.append(f'<polygon points="{points}" fill="{colour}" opacity="0.15"/>')
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values) if v is not None)
        parts.append(f'<polyline class="series" points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + pw - 4}" y="{top + 12 + 13 * k}" font-size="11" text-anchor="end" '
                     f'fill="{colour}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _settings_block(report) -> str:
    rows: list[tuple[str, str]] = []
    m = _manifest(report)
    if m is not None:
        model = m.get("model", {})
        rows += [("run", str(report.folder)), ("model", f"{model.get('architecture')} "
                                                        f"({model.get('checkpoint') or model.get('weights') or 'no weights'})"),
                 ("input size", "x".join(map(str, model.get("input_size", [])))), ("layers", ", ".join(m.get("layers", []))),
                 ("methods", ", ".join(m.get("methods", []))),
                 ("images", f"{m.get('counts', {}).get('ok')} ok, {m.get('counts', {}).get('failed')} failed")]
    elif report.settings is not None:
        s = report.settings
        rows += [("model", f"{s.model} ({s.checkpoint or s.weights})"), ("methods", ", ".join(s.method or [])),
                 ("layers", ", ".join(s.layer or ["auto"]))]
    rows.append(("maps scored", str(len(report.evaluation.rows))))
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows) + "</dl>"


def _metrics_table(report) -> str:
    """Per method x layer, every metric the summaries hold (camcli.evaluation.metrics)."""
    from camcli.evaluation.metrics import produced

    summaries = report.summaries
    metrics = produced(summaries)
    head = "".join(f"<th>{_e(m.title)}</th>" for m in metrics)
    body = []
    for s in summaries:
        cells = "".join(f'<td class="n">{_fmt(m.value(s), m.percent)}</td>' for m in metrics)
        body.append(f'<tr class="metric"><td>{_e(s.method)}</td><td>{_e(s.layer)}</td>'
                    f'<td class="n">{_e(s.images)}</td>{cells}</tr>')
    return (f'<table id="metrics"><tr><th>method</th><th>layer</th><th>images</th>{head}</tr>{"".join(body)}'
            "</table>")


def _sanity_section(report) -> str:
    with_sanity = [s for s in report.summaries if s.sanity]
    if not with_sanity:
        return ""
    units = report.sanity.units[::-1]
    labels = ["trained"] + [f"{u}" for u in units]
    charts = []
    for s in with_sanity:
        cascade = s.sanity["cascade"]
        series = [("Spearman ρ", [1.0] + [c["spearman"] for c in cascade], [0.0] + [c["spearman_std"] for c in cascade]),
                  ("SSIM", [1.0] + [c["ssim"] for c in cascade], [0.0] + [c["ssim_std"] for c in cascade]),
                  ("ρ, one block alone", [1.0] + [c["spearman"] for c in s.sanity["independent"]], None)]
        charts.append(f'<div class="chart sanity">{line_chart(f"{s.method} @ {s.layer}", labels, series, (-0.2, 1.0), y_label="similarity to trained maps", ticks=6)}</div>')
    lines = []
    for s in with_sanity:
        final = s.sanity["final_spearman"]
        lines.append(f"<li>{_e(s.method)} @ {_e(s.layer)}: ρ {final:.3f} after the whole cascade</li>")
    return ("<h2>Sanity checks: do the maps depend on the learnt weights?</h2>"
            '<p class="note">The weights are re-initialised from the classifier down, one block more per step '
            "(Adebayo et al., 2018); each point is the mean similarity, over the images, between the trained "
            "model's map and the randomised one (band: one standard deviation). A map that stays similar "
            "explains the architecture or the image, not what the model learnt.</p>"
            f'<ul>{"".join(lines)}</ul><div class="charts">{"".join(charts)}</div>')


def _faithfulness_section(report) -> str:
    summaries = [s for s in report.summaries if s.deletion_curve]
    if not summaries:
        return ""
    steps = len(summaries[0].deletion_curve) - 1
    labels = [f"{100 * i / steps:.0f}%" for i in range(steps + 1)]
    charts = [line_chart(title, labels, [(f"{s.method} @ {s.layer}", getattr(s, attr), None) for s in summaries],
                         y_label="class probability")
              for title, attr in (("deletion (lower is better)", "deletion_curve"),
                                  ("insertion (higher is better)", "insertion_curve"))]
    road = [s for s in report.summaries if s.road]
    if road:
        pct = [f"{p}%" for p in road[0].road["percentiles"]]
        series = [(f"{s.method} MoRF", s.road["morf"], None) for s in road] + \
                 [(f"{s.method} LeRF", s.road["lerf"], None) for s in road]
        charts.append(line_chart("ROAD: change in probability, pixels removed", pct, series, (-1.0, 1.0),
                                 y_label="Δ class probability"))
    return ("<h2>Faithfulness</h2>" + '<div class="charts">' +
            "".join(f'<div class="chart faith">{c}</div>' for c in charts) + "</div>")


def _thumbnail(image_path: Path, heat: np.ndarray, truth, found, original_width: int | None = None) -> str | None:
    """A small PNG of the image (or of the run's overlay, which may be scaled down: ``original_width``
    says the image's own width, in whose pixels the boxes are) with the map and the boxes."""
    from camcli.output.render import overlay

    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    rgb = bgr[..., ::-1]
    if heat is not None and heat.shape != rgb.shape[:2]:
        heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    picture = overlay(rgb, heat) if heat is not None else rgb  # a boxes-only run: the boxes alone
    scale = THUMB / max(picture.shape[:2])
    small = cv2.resize(picture, (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    small = np.ascontiguousarray(small[..., ::-1])
    if original_width:
        scale *= picture.shape[1] / original_width
    for box, colour in [(b, (0, 200, 0)) for b in truth] + ([(found, (0, 0, 255))] if found else []):
        cv2.rectangle(small, (int(box.x0 * scale), int(box.y0 * scale)), (int(box.x1 * scale) - 1, int(box.y1 * scale) - 1),
                      colour, 2)
    ok, buf = cv2.imencode(".png", small)
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


def _misses_section(report, image_paths: dict[str, Path], overlays: dict[tuple[str, str, str], str]) -> str:
    scored = [r for r in report.evaluation.rows if r.iou is not None]
    if not scored:
        return ""
    cards = []
    for key in dict.fromkeys((r.item.method, r.item.layer) for r in scored):
        rows = sorted((r for r in scored if (r.item.method, r.item.layer) == key),
                      key=lambda r: (bool(r.pointing), r.iou))[:WORST_PER_METHOD]
        for r in rows:
            src = image_paths.get(r.item.path)
            link = overlays.get((r.item.path, r.item.method, r.item.layer))
            png = _thumbnail(src, r.item.heat, r.matched, r.box) if src and src.is_file() else None
            if png is None and link and (report.folder / link).is_file():  # the image moved: the run's overlay
                png = _thumbnail(report.folder / link, None, r.matched, r.box, r.item.width)
            picture = f'<img alt="{_e(r.item.path)}" src="data:image/png;base64,{png}">' if png else "<p>(image not found)</p>"
            name = f'<a href="{quote(link)}">{_e(r.item.path)}</a>' if link else _e(r.item.path)
            cards.append(f'<div class="miss">{picture}<p class="path">{name}</p><p>{_e(key[0])} @ {_e(key[1])}: IoU {r.iou:.2f}, '
                         f'pointing {"hit" if r.pointing else "miss" if r.pointing is not None else "-"}, '
                         f'predicted {_e(r.item.pred_label)}</p></div>')
    return ("<h2>Worst misses</h2><p class=\"note\">Per method and layer, the images whose map missed the "
            "explained class's box worst (pointing misses first, then lowest IoU). Green: the true box; red: "
            f"the box from the map.</p><div class=\"misses\">{''.join(cards)}</div>")


def _manifest(report) -> dict | None:
    """The run's run.json, or ``None`` (none there, or damaged: the page is made without it)."""
    from camcli.run.resume import read_json_file

    path = report.folder / "run.json"
    if not path.is_file():
        return None
    try:
        return read_json_file(path)
    except UsageError:
        return None


def _locate(report) -> tuple[dict[str, Path], dict[tuple[str, str, str], str]]:
    """Where each scored image lies, and the run's overlay for each (path, method, layer)."""
    from camcli.engine.images import discover
    from camcli.output.csvfile import read_rows

    m = _manifest(report)
    inputs = m.get("inputs", []) if m is not None else report.inputs
    paths = {}
    if inputs:
        try:
            paths = {i.rel: Path(i.path) for i in discover([i for i in inputs if os.path.lexists(str(i))])}
        except UsageError:  # every input moved since the run: the run's own overlays stand in
            paths = {}
    overlays = {}
    csv_path = report.folder / "predictions.csv"
    if csv_path.is_file():
        _, rows = read_rows(csv_path)
        overlays = {(r.path, r.method, r.layer): r.output for r in rows if r.ok and r.output}
    return paths, overlays


def _verdict(report) -> str:
    """What the gates say; "no gates set" when none were asked for (nothing was checked)."""
    failed = report.gates_failed
    if failed:
        return '<p class="fail">gates failed:</p><ul>' + "".join(f"<li>{_e(f)}</li>" for f in failed) + "</ul>"
    gates = report.gates
    if not gates:
        return ('<p class="note">no gates set: nothing was checked (--min-iou, --min-pointing, --min-accuracy and '
                '--max-sanity-similarity make this a check)</p>')
    asked = ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in gates.items())
    return f'<p class="pass">every gate holds ({_e(asked)})</p>'


def _per_class_section(report) -> str:
    """Per method x layer and explained class: images, accuracy, pointing game, mean IoU."""
    groups: dict[tuple[str, str, str], list] = {}
    for r in report.evaluation.rows:
        groups.setdefault((r.item.method, r.item.layer, str(r.item.target_label)), []).append(r)
    if len({label for _, _, label in groups}) < 2:
        return ""

    def mean(values) -> float | None:
        values = [float(v) for v in values if v is not None]
        return sum(values) / len(values) if values else None

    body = "".join(
        f'<tr class="per-class"><td>{_e(m)}</td><td>{_e(l)}</td><td>{_e(label)}</td><td class="n">{len(rows)}</td>'
        f'<td class="n">{_fmt(mean(r.correct for r in rows), True)}</td>'
        f'<td class="n">{_fmt(mean(r.pointing for r in rows), True)}</td>'
        f'<td class="n">{_fmt(mean(r.iou for r in rows))}</td></tr>'
        for (m, l, label), rows in sorted(groups.items()))
    return ('<h2>Per class</h2><p class="note">By the class explained (the top-1 class unless --target), per method '
            'and layer.</p><div class="wide"><table id="per-class"><tr><th>method</th><th>layer</th><th>class</th>'
            f'<th>images</th><th>accuracy</th><th>pointing</th><th>mean IoU</th></tr>{body}</table></div>')


def _audit_section(folder: Path) -> str:
    """The run's audit (``camcli audit`` wrote audit.json beside the run's CSV), as audit.html shows it."""
    import json

    from camcli.output.audit_page import STYLE, section

    try:
        audit = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return f"<style>{STYLE}</style>{section(audit, folder)}"


def write_report(report, path: Path) -> Path:
    paths, overlays = _locate(report)
    verdict = _verdict(report)
    gallery = report.folder / "index.html"
    links = ('<p class="note"><a href="index.html">the run\'s gallery</a>: every image and its maps</p>'
             if gallery.is_file() else "")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>camcli evaluate: '
            f'{_e(report.folder.name)}</title><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_STYLE}</style></head><body><h1>camcli evaluate</h1>{links}{_settings_block(report)}{verdict}"
            f'<h2>Metrics</h2><div class="wide">{_metrics_table(report)}</div>{_per_class_section(report)}'
            f'{_sanity_section(report)}{_faithfulness_section(report)}'
            f"{_misses_section(report, paths, overlays)}{_audit_section(report.folder)}</body></html>\n")
    atomic_write(path, page.encode("utf-8"))
    return path
