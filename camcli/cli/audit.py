"""``camcli audit``: the strategies a model uses per class across a finished run, and the shortcuts among them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from camcli.cli import app, handle_errors, stderr_console
from camcli.cli.signals import InterruptOnTerm
from camcli.cli.stdout import DataStdout
from camcli.errors import EXIT_FAILURES, EXIT_OK


@app.command(epilog="Exit codes: 0 the audit ran and every gate holds (or none was set; a map that cannot be read is a warning and an "
                    "`unreadable` row); 1 a gate failed; 2 usage error "
                    "(not a run folder, no saved maps, a bad truth file); 130 interrupted (Ctrl-C); 143 stopped by SIGTERM.")
@handle_errors
def audit(
    run: Annotated[Path, typer.Argument(help="A finished `camcli explain` output folder whose maps were saved (`--save-heatmap npy`).", show_default=False)],
    truth: Annotated[Optional[Path], typer.Option("--truth", "-t", help="Ground truth, as for `camcli evaluate`: boxes CSV (path,x0,y0,x1,y1[,label]), a Pascal VOC folder or COCO JSON. Gives each cluster its share of correct predictions, clears places where the objects are, and flags clusters whose evidence is off the objects.", rich_help_panel="Ground truth")] = None,
    normalized: Annotated[bool, typer.Option("--normalized", help="CSV coordinates are fractions of the image size (0..1).", rich_help_panel="Ground truth")] = False,
    by: Annotated[str, typer.Option("--by", help="Group the maps by the class each explains (explained: the prediction, unless the run explained others with --target or --top-k) or by the images' true classes (true; needs --truth with labels). \\[choices: explained, true]", rich_help_panel="Clusters")] = "explained",
    method: Annotated[Optional[str], typer.Option("--method", "-m", help="Audit only this method's maps (default: each method the run saved, apart).", rich_help_panel="Clusters")] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", "-l", help="Audit only the maps of this layer, as the CSV writes it (layer4[1]).", rich_help_panel="Clusters")] = None,
    clusters: Annotated[Optional[int], typer.Option("--clusters", "-k", help="Clusters per class, instead of the number the eigengap chooses.", rich_help_panel="Clusters")] = None,
    max_clusters: Annotated[int, typer.Option("--max-clusters", help="The most clusters the eigengap may choose per class.", rich_help_panel="Clusters")] = 8,
    grid: Annotated[int, typer.Option("--grid", help="Maps are compared downsampled to this many cells a side.", rich_help_panel="Clusters")] = 16,
    neighbours: Annotated[Optional[int], typer.Option("--neighbours", help="Neighbours per map in the affinity graph. \\[default: about the square root of the class's maps, 10 to 30]", rich_help_panel="Clusters", show_default=False)] = None,
    fence: Annotated[float, typer.Option("--fence", help="Outliers: a map whose distance to the nearest cluster is above the third quartile plus this many interquartile ranges (Tukey's fence).", rich_help_panel="Clusters")] = 1.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of k-means' starts.", rich_help_panel="Clusters")] = 0,
    fail_on: Annotated[Optional[str], typer.Option("--fail-on", help="Gate: exit 1 when a class's largest cluster is flagged (largest) or any cluster is (any). \\[choices: largest, any]", rich_help_panel="Gates")] = None,
    html: Annotated[bool, typer.Option("--html", help="Also write audit.html: per class its mean map, and per cluster its mean map, exemplars and flags. Self-contained; opens from the file system.", rich_help_panel="Output")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the audit (audit.json's content) as one JSON object on stdout.", rich_help_panel="Output")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table or log lines on stderr.", rich_help_panel="Output")] = False,
) -> None:
    """Look across a run's maps: per class, the strategies the model uses, and the shortcuts among them.

    The maps of each class (of each method and layer) are clustered spectrally, as SpRAy does
    (Lapuschkin et al., 2019): downsampled maps, a k-nearest-neighbour graph with self-tuning
    affinities, the number of clusters from the eigengap. For each cluster: its size, mean map,
    exemplars and (with --truth) share of correct predictions; the outliers (maps far from every
    cluster); and flags worded as hypotheses to check, with the pictures to look at:
    fixed-place (every map of the cluster peaks at one place, as a watermark or a border would
    make it) and, with truth boxes, off-object.

    Writes audit.csv (a row per map: class, cluster, distance, outlier, flags) and audit.json into
    the run's folder, and with --html audit.html.

    Examples:

      camcli explain photos/ --config configs/demo.toml --save-heatmap npy --heatmap-size layer --out runs/photos

      camcli audit runs/photos --html

      camcli audit runs/photos --truth boxes.csv --fail-on largest --json
    """
    from camcli.auditing import audit as run_audit

    console = stderr_console()
    with InterruptOnTerm(), DataStdout() as data:
        report = run_audit(run, truth, normalized=normalized, by=by, method=method, layer=layer, grid=grid,
                           clusters=clusters, max_clusters=max_clusters, neighbours=neighbours, fence=fence,
                           fail_on=fail_on, html=html, seed=seed)
        d = report.as_dict()
        if json_out:
            print(json.dumps(d), file=data.stream, flush=True)
    if not quiet:
        print_summary(d, to_stderr=json_out)
        for f in report.files:
            console.print(f"wrote {f}", markup=False)
    if report.without_truth:
        console.print(f"camcli: warning: {len(report.without_truth)} image(s) have no ground truth, e.g. "
                      f"{', '.join(report.without_truth[:3])}", markup=False)
    if report.unreadable:
        console.print(f"camcli: warning: {len(report.unreadable)} map(s) could not be read and joined no cluster, e.g. "
                      f"{report.unreadable[0]}", markup=False)
    for f in report.gates_failed:
        console.print(f"camcli: gate failed: {f}", markup=False)
    raise typer.Exit(EXIT_FAILURES if report.gates_failed else EXIT_OK)


def print_summary(d: dict, to_stderr: bool = False) -> None:
    """One line per class, one per cluster (with its flags' sentences): the audit in words."""
    import sys

    out = sys.stderr if to_stderr else sys.stdout
    for c in d["classes"]:
        print(f"{c['method']} at {c['layer']}, {c['class']}: {c['maps']} maps, {len(c['clusters'])} cluster(s) "
              f"({c['clusters_chosen_by']}), {len(c['outliers'])} outlier(s)", file=out)
        for k in c["clusters"]:
            correct = "" if k["correct"] is None else f", {k['correct']:.0%} correct"
            print(f"  cluster {k['cluster']}: {k['size']} maps ({k['share']:.0%}){correct}, {k['peaks']}", file=out)
            for f in k["flags"]:
                print(f"    FLAG {f['text']}: {', '.join(f['look_at'])}", file=out)
    print(f"{d['flagged']} cluster(s) flagged", file=out)
