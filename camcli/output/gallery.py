"""``index.html``: a self-contained gallery of a run, usable by opening the file (no server).

One card per image, streamed to the file as the CSV is read (the gallery never holds more than
one card in memory) and renamed into place at the end. The header gives the run's model and
counts. A small inline script (no network) adds what a long run needs: a switch between the
methods and layers on each card and for all cards, sorting by file name or score, filters for
failed images and empty maps, pages of 60 cards (images load lazily, hidden cards not at all), and
for a scan a slider per plane through its slices; a video's overlays play in the card. The state
lives in the address's ``#`` part (``#map=cam@layer4[1]&sort=score&filter=failed&page=2``), so a
view can be bookmarked or shared. Links are relative to the output folder.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from urllib.parse import quote

from camcli.output.tempfiles import temp_path
from camcli import tasks
from camcli.output.rows import PredictionRow
from camcli.tasks import Task

PAGE_SIZE = 60
#: overlays a card plays as video rather than shows as a picture
VIDEO_SUFFIXES = (".webm", ".mp4")
ON = ' class="on"'
EMPTY = '<div class="empty">empty map</div>'

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;background:#fafafa;color:#222}
h1{font-size:1.2rem;margin:0 0 .3rem} .about{font-size:.85rem;color:#444;margin-bottom:.5rem}
.counts span{margin-right:1rem} .bad{color:#b00}
.controls{position:sticky;top:0;background:#fafafa;padding:.4rem 0;display:flex;flex-wrap:wrap;gap:.8rem;
align-items:center;font-size:.85rem;border-bottom:1px solid #ddd;margin-bottom:.6rem;z-index:1}
.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:260px}
.card[hidden]{display:none} .card img,.card video{width:100%;height:auto;display:block;border-radius:3px}
.card .path{font-size:.8rem;word-break:break-all;color:#555}
.card .pred{font-weight:600} .card.error{border-color:#c33;background:#fff5f5} .card .err{color:#b00;font-size:.8rem}
.maps{display:flex;flex-wrap:wrap;gap:4px;font-size:.75rem;margin-top:4px}
.maps button{font-size:.72rem;padding:1px 5px;border:1px solid #bbb;border-radius:3px;background:#f4f4f4;cursor:pointer}
.maps button.on{background:#1f6feb;color:#fff;border-color:#1f6feb} .empty{color:#a60;font-size:.75rem}
.slices{margin-top:6px;font-size:.72rem;display:grid;grid-template-columns:repeat(3,1fr);gap:4px;align-items:end}
.plane{text-align:center} .plane input{width:100%;margin:2px 0}
.slice{width:100%;background-repeat:no-repeat;background-color:#000;border-radius:3px}
"""

# The page's behaviour; everything it needs is in the cards' data attributes.
_SCRIPT = """
(function(){
const grid=document.getElementById('grid'), cards=Array.from(grid.children);
const q=k=>document.getElementById(k), size=%d;
function state(){const s={map:'',sort:'name',filter:'all',page:1};
  for(const part of location.hash.slice(1).split('&')){const [k,v]=part.split('=');
    if(k in s&&v!==undefined)s[k]=k==='page'?Math.max(1,parseInt(v)||1):decodeURIComponent(v);}
  return s;}
function show(card,key){const maps=JSON.parse(card.dataset.maps||'[]');const m=maps.find(x=>x[0]===key)||maps[0];
  if(!m)return;const img=card.querySelector('img,video');img.src=m[1];img.parentElement.href=m[1];
  card.querySelectorAll('.maps button').forEach(b=>b.classList.toggle('on',b.dataset.key===m[0]));slices(card);}
function slide(d){const r=d.parentElement.querySelector('input'),n=+d.dataset.frames;
  d.style.backgroundPositionY=(r.value/(n-1)*100)+'%%';}
function slices(card){const planes=card.querySelectorAll('.slice');if(!planes.length)return;
  const base=card.querySelector('img').getAttribute('src').replace(/\.png$/,'');
  planes.forEach(d=>{const url=base+'.'+d.dataset.plane+'.jpg',n=+d.dataset.frames;
    if(d.dataset.url===url)return;d.dataset.url=url;const im=new Image();
    im.onload=()=>{d.style.aspectRatio=im.naturalWidth+'/'+(im.naturalHeight/n);};im.src=url;
    d.style.backgroundImage='url("'+url+'")';d.style.backgroundSize='100%% '+(n*100)+'%%';slide(d);});}
function apply(){const s=state();q('map').value=s.map;q('sort').value=s.sort;q('filter').value=s.filter;
  const keep=cards.filter(c=>s.filter==='all'||(s.filter==='failed'&&c.dataset.status==='failed')||
    (s.filter==='empty'&&c.dataset.empty==='1'));
  const by={name:(a,b)=>a.dataset.path.localeCompare(b.dataset.path),
    score:(a,b)=>(parseFloat(b.dataset.score)||-1)-(parseFloat(a.dataset.score)||-1),
    low:(a,b)=>(parseFloat(a.dataset.score)||2)-(parseFloat(b.dataset.score)||2)}[s.sort]||(()=>0);
  keep.sort(by);const pages=Math.max(1,Math.ceil(keep.length/size)),page=Math.min(s.page,pages);
  const shown=new Set(keep.slice((page-1)*size,page*size));
  for(const c of cards){c.hidden=!shown.has(c);}
  for(const c of keep)grid.appendChild(c);
  for(const c of shown){if(s.map)show(c,s.map);else slices(c);}
  q('page').textContent=`page ${page} of ${pages} (${keep.length} ${grid.dataset.noun||'image'}(s))`;
  q('prev').disabled=page<=1;q('next').disabled=page>=pages;}
function set(k,v){const s=state();s[k]=v;if(k!=='page')s.page=1;
  location.hash=Object.entries(s).filter(([k,v])=>v!==''&&!(k==='page'&&v===1)).map(([k,v])=>k+'='+encodeURIComponent(v)).join('&');}
q('map').onchange=e=>set('map',e.target.value);q('sort').onchange=e=>set('sort',e.target.value);
q('filter').onchange=e=>set('filter',e.target.value);
q('prev').onclick=()=>set('page',state().page-1);q('next').onclick=()=>set('page',state().page+1);
grid.addEventListener('click',e=>{const b=e.target.closest('.maps button');if(b)show(b.closest('.card'),b.dataset.key);});
grid.addEventListener('input',e=>{const p=e.target.closest('.plane');if(p)slide(p.querySelector('.slice'));});
window.addEventListener('hashchange',apply);apply();
})();
""" % PAGE_SIZE


def _href(rel: str) -> str:
    return html.escape(quote(rel, safe="/@"))


def _about(about: dict | None) -> str:
    if not about:
        return ""
    model = about.get("model") or {}
    parts = [f"model {model.get('architecture')}"]
    weights = model.get("checkpoint") or model.get("weights")
    if weights:
        parts.append(f"weights {os.path.basename(str(weights))}")
    if model.get("input_size"):
        parts.append("input " + "x".join(map(str, model["input_size"])))
    if about.get("methods"):
        parts.append("methods " + ", ".join(about["methods"]))
    if about.get("layers"):
        parts.append("layers " + ", ".join(about["layers"]))
    return f'<div class="about">{html.escape(" · ".join(parts))}</div>'


def _report_link(out: Path) -> str:
    """A link to ``camcli evaluate``'s report when there is one (evaluate rebuilds the gallery to add it)."""
    if not (out / "report.html").is_file():
        return ""
    return '<div class="about"><a href="report.html">evaluation report</a>: metrics, sanity checks, worst misses</div>'


class Gallery:
    """Write ``index.html`` card by card: :meth:`add` each image's rows, then :meth:`close`."""

    def __init__(self, out: Path, about: dict | None = None, task: Task | None = None) -> None:
        self.task = task or tasks.fallback()  # what a card shows: the run's task says (camcli/tasks/)
        self.path = out / "index.html"
        self._tmp = temp_path(self.path)
        self._cards = temp_path(out / "index.cards")
        self._file = open(self._cards, "w", encoding="utf-8")
        self.about = about
        self.cards = self.failed = self.empty = 0
        self.keys: dict[str, None] = {}

    def add(self, rows: list[PredictionRow]) -> None:
        """One card for one image's rows."""
        first = rows[0]
        path = html.escape(first.path)
        self.cards += 1
        if not first.ok and not first.output:
            self.failed += 1
            self._file.write(f'<div class="card error" data-path="{path}" data-status="failed" data-empty="0">'
                             f'<div class="path">{path}</div><div class="err">error: {html.escape(first.error)}</div>'
                             "</div>\n")
            return
        maps, score, pred = self.task.gallery_card(rows)
        for key, _ in maps:
            self.keys.setdefault(key)
        empty = any(r.empty_map for r in rows)
        self.empty += empty
        failed = any(not r.ok for r in rows)
        self.failed += failed
        main = first.output or ""
        shown = (f'<video src="{_href(main)}" autoplay muted loop playsinline preload="metadata" title="{path}"></video>'
                 if main.endswith(VIDEO_SUFFIXES) else f'<img loading="lazy" src="{_href(main)}" alt="{path}">')
        buttons = "".join(f'<button data-key="{html.escape(k)}"{ON if i == 0 else ""}>'
                          f"{html.escape(k.replace('@', ' @ '))}</button>" for i, (k, _) in enumerate(maps))
        panel = getattr(first, "panel", None)  # a classifier's panel of every map
        panel = f' <a href="{_href(panel)}">panel</a>' if panel else ""
        data_maps = html.escape(json.dumps([[k, quote(v, safe="/@")] for k, v in maps]))
        errors = "".join(f'<div class="err">{html.escape(r.method or "")}: {html.escape(r.error)}</div>'
                         for r in rows if not r.ok)
        self._file.write(
            f'<div class="card" data-path="{path}" data-score="{score if score is not None else ""}" '
            f'data-status="{"failed" if failed else "ok"}" data-empty="{int(empty)}" data-maps="{data_maps}">'
            f'<a href="{_href(main)}">{shown}</a>'
            f'<div class="path">{path}</div><div class="pred">{pred}</div>'
            f'{EMPTY if empty else ""}{errors}'
            f'<div class="maps">{buttons}{panel}</div>{self.task.gallery_more(rows, self.path.parent)}</div>\n')

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        ok = self.cards - self.failed
        from camcli.engine.discovery import KIND_NOUNS

        noun = KIND_NOUNS.get(self.task.inputs, "image")  # a volume run's cards are scans
        options = "".join(f'<option value="{html.escape(k)}">{html.escape(k.replace("@", " @ "))}</option>'
                          for k in self.keys)
        head = (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>camcli run</title><style>{_STYLE}</style></head><body>\n<h1>camcli run</h1>{_about(self.about)}"
            f"{_report_link(self.path.parent)}"
            f'<div class="counts"><span id="count-images">{self.cards} {noun}(s)</span>'
            f'<span id="count-ok">{ok} ok</span><span id="count-failed" class="{"bad" if self.failed else ""}">'
            f'{self.failed} failed</span><span id="count-empty">{self.empty} with an empty map</span></div>\n'
            '<div class="controls"><label>map <select id="map"><option value="">as on each card</option>'
            f'{options}</select></label><label>sort <select id="sort"><option value="name">file name</option>'
            '<option value="score">score, high first</option><option value="low">score, low first</option>'
            f'</select></label><label>show <select id="filter"><option value="all">all {noun}s</option>'
            '<option value="failed">failed</option><option value="empty">empty maps</option></select></label>'
            '<button id="prev">&larr;</button><span id="page"></span><button id="next">&rarr;</button></div>\n'
            f'<div class="grid" id="grid" data-noun="{html.escape(noun)}">\n')
        with open(self._tmp, "w", encoding="utf-8") as f, open(self._cards, encoding="utf-8") as cards:
            f.write(head)
            for line in cards:
                f.write(line)
            f.write(f"</div>\n<script>{_SCRIPT}</script>\n</body></html>\n")
        os.remove(self._cards)
        os.replace(self._tmp, self.path)
