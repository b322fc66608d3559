"""``--json``: one object per image as it finishes, then one summary object (NDJSON on stdout)."""

from __future__ import annotations

from camcli.output.rows import PredictionRow


def image_record(rows: list[PredictionRow]) -> dict:
    """The prediction, the explained class, and one entry per map, from an image's rows."""
    first = rows[0]
    record = {"type": "image", "path": first.path, "status": "ok" if all(r.ok for r in rows) else "error",
              "error": "; ".join(r.error for r in rows if r.error)}
    if first.explained and first.detections is not None:
        record.update(width=first.width, height=first.height, note=first.note or None,
                      detections=detection_entries(rows))
    elif first.explained and first.segments is not None:
        record.update(width=first.width, height=first.height, note=first.note or None, mask=first.mask,
                      segments=segment_entries(rows))
    elif first.explained:
        record.update(width=first.width, height=first.height, note=first.note or None,
                      prediction={"index": first.pred_index, "label": first.pred_label, "score": first.score},
                      target={"index": first.target_index, "label": first.target_label, "score": first.target_score},
                      topk=[{"index": i, "label": lab, "score": p} for i, lab, p in first.topk])
        maps = []
        for r in rows:
            entry = {"method": r.method, "layer": r.layer,
                     "target": {"index": r.target_index, "label": r.target_label, "score": r.target_score},
                     "overlay": r.output, "heatmap": r.heatmap, "empty_map": r.empty_map, "warning": r.warning}
            if r.box_status:
                entry["box"] = list(r.box) if r.box_status == "ok" else None
            maps.append(entry)
        record["maps"] = maps
        record["panel"] = first.panel
    return record


def detection_entries(rows: list[PredictionRow]) -> list[dict]:
    """A detection run's image: one object per box, with its maps (method x layer)."""
    entries: dict[int, dict] = {}
    for r in rows:
        if r.det_rank is None:
            continue
        entry = entries.setdefault(r.det_rank, {
            "rank": r.det_rank, "index": r.det_index, "label": r.det_label, "score": r.det_score,
            "box": list(r.det_box) if r.det_box else None, "maps": []})
        entry["maps"].append({"method": r.method, "layer": r.layer, "overlay": r.output, "heatmap": r.heatmap,
                              "energy_in_box": r.energy_in_box, "empty_map": r.empty_map, "warning": r.warning})
    return list(entries.values())


def segment_entries(rows: list[PredictionRow]) -> list[dict]:
    """A segmentation run's image: one object per class found, with its maps (method x layer)."""
    entries: dict[int, dict] = {}
    for r in rows:
        if r.seg_rank is None:
            continue
        entry = entries.setdefault(r.seg_rank, {
            "rank": r.seg_rank, "index": r.seg_index, "label": r.seg_label, "pixel_share": r.pixel_share,
            "mean_probability": r.mean_probability, "region": r.region, "maps": []})
        entry["maps"].append({"method": r.method, "layer": r.layer, "overlay": r.output, "heatmap": r.heatmap,
                              "energy_in_mask": r.energy_in_mask, "empty_map": r.empty_map, "warning": r.warning})
    return list(entries.values())


def summary_record(summary) -> dict:
    """The closing object: counts, time, and where the outputs are."""
    return {"type": "summary", "images": summary.images, "ok": summary.ok, "failed": summary.failed,
            "empty_maps": summary.empty_maps, "seconds": round(summary.seconds, 3),
            "interrupted": summary.interrupted, "resumed": summary.resumed,
            "out": str(summary.out) if summary.out else None}
