"""`camcli explain` on folders of clips (issue 39): video files, an animated GIF and a folder of
frames, explained by torchvision's video classes (small configurations, seeded weights) and by a
motion detector of one's own; every frame's map lands on the moving square, overlays play at
the source's frame rate, and the maps equal pytorch-grad-cam's 5-D Grad-CAM on the same clip."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
W, H = 96, 64
SIDE = 12  # the moving square's side

#: a motion detector: the luminance's change between neighbouring frames, rectified, is its first
#: class's evidence; a square that stands still gives none, one that moves gives it at its edges
MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class Motion(nn.Module):
        def __init__(self):
            super().__init__()
            self.diff = nn.Conv3d(3, 2, (2, 1, 1), bias=False)
            self.feat = nn.Conv3d(2, 2, (1, 5, 5), padding=(0, 2, 2), bias=False)
            self.moved = nn.ReLU()
            self.act = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool3d(1)
            self.fc = nn.Linear(2, 2)
            with torch.no_grad():
                luma = torch.tensor([0.299, 0.587, 0.114])
                self.diff.weight.zero_()
                self.diff.weight[0, :, 0, 0, 0], self.diff.weight[0, :, 1, 0, 0] = -luma, luma
                self.diff.weight[1] = -self.diff.weight[0]
                self.feat.weight.zero_()
                self.feat.weight[0, 0].fill_(1 / 25)
                self.feat.weight[1, 1].fill_(1 / 25)
                self.fc.weight.copy_(torch.tensor([[10.0, 10.0], [-10.0, -10.0]]))
                self.fc.bias.zero_()

        def forward(self, x):
            a = self.act(self.feat(self.moved(self.diff(x))))
            return self.fc(self.pool(a).flatten(1))

    def build():
        return Motion()
""")


def square_at(k: int, frames: int) -> tuple[int, int]:
    """The moving square's top-left corner in frame ``k``: left to right along the bottom half."""
    return 4 + round(k * (W - SIDE - 8) / max(1, frames - 1)), 40


def frame(k: int, frames: int) -> np.ndarray:
    """A grey frame (RGB) with a still blue square top left and a red one moving."""
    f = np.full((H, W, 3), 60, np.uint8)
    f[6:6 + SIDE, 8:8 + SIDE] = (40, 40, 220)
    x, y = square_at(k, frames)
    f[y:y + SIDE, x:x + SIDE] = (230, 30, 30)
    return f


def write_video(path: Path, frames: int, fps: float, fourcc: str) -> None:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert out.isOpened()
    for k in range(frames):
        out.write(cv2.cvtColor(frame(k, frames), cv2.COLOR_RGB2BGR))
    out.release()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("clips")
    write_video(folder / "a.mp4", 40, 20, "mp4v")
    write_video(folder / "b.avi", 24, 12, "MJPG")
    pictures = [Image.fromarray(frame(k, 16)) for k in range(16)]
    pictures[0].save(folder / "c.gif", save_all=True, append_images=pictures[1:], duration=100, loop=0)
    (folder / "d_frames").mkdir()
    for k in range(20):
        Image.fromarray(frame(k, 20)).save(folder / "d_frames" / f"{k:03d}.png")
    (folder / "e_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (folder / "model.py").write_text(MODEL)
    return folder


def explain(inputs, out: Path, *args, model: str | None = None):
    from camcli.cli import app

    args = ["explain", *map(str, inputs if isinstance(inputs, list) else [inputs]), "--out", str(out),
            *(["--model", model] if model else []), *args]
    return CliRunner().invoke(app, args)


def motion(folder: Path, out: Path, *args, inputs=None):
    return explain(inputs or folder, out, "--task", "video", "--input-size", "64", "--clip-len", "8", *args,
                   model=f"{folder / 'model.py'}:build")


def rows(out: Path) -> list[dict]:
    with open(out / "clips.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_frame_of_every_clip_has_its_map_on_the_moving_square(clips, tmp_path):
    out = tmp_path / "out"
    r = motion(clips, out, "--method", "gradcam,layercam", "--save-heatmap", "npy", "--html")
    assert r.exit_code == 1, r.output  # the broken file fails; the others are explained
    assert "explained 4 of 5 video(s), 1 failed" in r.stderr
    found = rows(out)
    by_path = {}
    for row in found:
        by_path.setdefault(row["path"], []).append(row)
    assert set(by_path) == {"a.mp4", "b.avi", "c.gif", "d_frames", "e_broken.mp4"}
    broken = by_path.pop("e_broken.mp4")
    assert len(broken) == 1 and broken[0]["status"] == "error" and "cannot decode" in broken[0]["error"]
    frames_of = {"a.mp4": 40, "b.avi": 24, "c.gif": 16, "d_frames": 20}
    fps_of = {"a.mp4": 20, "b.avi": 12, "c.gif": 10, "d_frames": 25}
    for path, group in by_path.items():
        assert len(group) == 2 and {g["method"] for g in group} == {"gradcam", "layercam"}
        for row in group:
            assert row["status"] == "ok" and row["pred_label"] == "class_0", row
            assert int(row["frames"]) == frames_of[path] and float(row["fps"]) == fps_of[path]
            start, end = int(row["start_frame"]), int(row["end_frame"])
            heat = np.load(out / row["heatmap"])
            assert heat.shape == (end - start + 1, H, W)
            # each frame's peak lies on the moving square as it stands in that frame
            for k, m in enumerate(heat):
                y, x = np.unravel_index(int(m.argmax()), m.shape)
                sx, sy = square_at(start + k, frames_of[path])
                assert sx - 4 <= x <= sx + SIDE + 4 and sy - 4 <= y <= sy + SIDE + 4, (path, start + k, x, y)
            peak_frame = int(row["peak_frame"])
            assert start <= peak_frame <= end
            sx, sy = square_at(peak_frame, frames_of[path])
            assert sx - 4 <= int(row["peak_x"]) <= sx + SIDE + 4 and sy - 4 <= int(row["peak_y"]) <= sy + SIDE + 4
            assert float(row["peak_time"]) == pytest.approx(peak_frame / fps_of[path], abs=1e-3)
            # the overlay plays at the source's rate, one frame per source frame of the window
            video = cv2.VideoCapture(str(out / row["output"]))
            assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(fps_of[path], rel=1e-3)
            count = 0
            while video.read()[0]:
                count += 1
            assert count == end - start + 1 and row["output"].endswith(".webm")
            strip = cv2.imread(str(out / row["strip"]))
            assert strip is not None and strip.shape[0] == 144 and strip.shape[1] > strip.shape[0]
    page = (out / "index.html").read_text()
    assert "<video" in page and "a.mp4.gradcam@act--clip0.webm" in page


def test_clips_cover_the_video_as_asked(clips, tmp_path):
    out = tmp_path / "all"
    r = motion(clips, out, "--clips", "all", "--clip-fps", "10", inputs=clips / "a.mp4")
    assert r.exit_code == 0, r.output
    found = rows(out)  # 40 frames at 20 fps, 8 frames 2 apart: windows of 15 frames
    assert [(int(r["start_frame"]), int(r["end_frame"])) for r in found] == [(0, 14), (15, 29), (25, 39)]
    assert {r["clips"] for r in found} == {"3"} and [r["clip"] for r in found] == ["0", "1", "2"]
    assert float(found[1]["start_time"]) == pytest.approx(0.75) and float(found[2]["end_time"]) == pytest.approx(2.0)
    out = tmp_path / "three"
    r = motion(clips, out, "--clips", "3", "--json", "--save-heatmap", "npy", "--heatmap-size", "layer",
               inputs=clips / "b.avi")
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    video = records[0]
    assert video["path"] == "b.avi" and video["fps"] == 12 and video["frames"] == 24
    assert [c["start_frame"] for c in video["clips"]] == [0, 8, 16]
    assert all(c["prediction"]["label"] == "class_0" for c in video["clips"])
    layer_map = np.load(out / video["clips"][0]["maps"][0]["heatmap"])
    assert layer_map.shape == (7, 64, 64)  # the layer's (t, h, w): 8 frames made 7 differences
    assert records[-1]["ok"] == 1


def test_what_a_video_run_refuses(clips, tmp_path):
    r = motion(clips, tmp_path / "o1", "--method", "fullgrad", inputs=clips / "a.mp4")
    assert r.exit_code == 2 and "flat images only" in r.stderr
    r = motion(clips, tmp_path / "o2", "--save-heatmap", "png16", inputs=clips / "a.mp4")
    assert r.exit_code == 2 and "use npy" in r.stderr
    r = motion(clips, tmp_path / "o3", "--clips", "some", inputs=clips / "a.mp4")
    assert r.exit_code == 2 and "`clips` must be one, all or a number" in r.stderr.replace("--clips", "`clips`")
    # without `task`, one's own 3D network is a volume model: it finds no scans among videos
    r = explain(clips / "a.mp4", tmp_path / "o4", "--input-size", "64", model=f"{clips / 'model.py'}:build")
    assert r.exit_code != 0 and "3D scan" in r.output


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def the_clip(path: Path, loaded_size, resize, mean, std) -> torch.Tensor:
    """The middle window of ``path`` as camcli feeds it, made here from camcli's own reader."""
    from camcli.engine.clips import frame_step, framing, probe, read_frames, windows

    video = probe(str(path))
    window = windows(video, loaded_size[0], frame_step(video, None), "one")[0]
    fit = framing((video.height, video.width), tuple(loaded_size[1:]), resize)
    frames = {k: fit.fit(rgb) for k, rgb in read_frames(video, window.start, window.stop)}
    x = torch.from_numpy(np.stack([frames[k] for k in window.sampled])).permute(3, 0, 1, 2).float() / 255
    return ((x - torch.tensor(mean).view(3, 1, 1, 1)) / torch.tensor(std).view(3, 1, 1, 1))[None]


def small_swin3d():
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    torch.manual_seed(0)
    return SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=24, depths=[1, 1], num_heads=[2, 2],
                             window_size=[2, 4, 4], num_classes=5)


def small_mvit():
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    torch.manual_seed(0)
    blocks = [MSBlockConfig(num_heads=1, input_channels=16, output_channels=32, kernel_q=[3, 3, 3],
                            kernel_kv=[3, 3, 3], stride_q=[1, 1, 1], stride_kv=[1, 2, 2]),
              MSBlockConfig(num_heads=2, input_channels=32, output_channels=32, kernel_q=[3, 3, 3],
                            kernel_kv=[3, 3, 3], stride_q=[1, 2, 2], stride_kv=[1, 1, 1]),
              MSBlockConfig(num_heads=2, input_channels=32, output_channels=32, kernel_q=[3, 3, 3],
                            kernel_kv=[3, 3, 3], stride_q=[1, 1, 1], stride_kv=[1, 1, 1])]
    model = MViT(spatial_size=(32, 32), temporal_size=8, block_setting=blocks, residual_pool=True,
                 residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=5)
    for p in model.parameters():  # MViT starts its class token and some projections at zero: give them values
        if p.dim() <= 1 and not p.abs().sum():
            torch.nn.init.normal_(p, std=0.02)
    return model


def tokens_to_map(grid):
    def reshape(x):
        return x[:, 1:].reshape(x.shape[0], *grid, x.shape[-1]).permute(0, 4, 1, 2, 3)
    return reshape


@pytest.mark.parametrize("case", ["r3d_18", "swin3d", "mvit"])
def test_gradcam_equals_pytorch_grad_cams_5d_gradcam(clips, tmp_path, case):
    """camcli's map of a clip at the layer, against pytorch-grad-cam's GradCAM given the same clip
    tensor and layer (its reshape_transform reading the tokens or channels-last output)."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import camcli

    out = tmp_path / "out"
    if case == "r3d_18":
        run = camcli.explain(clips / "a.mp4", "r3d_18", weights="none", num_classes=7, clip_len=16, input_size=64,
                             clip_fps=None, out=out, save_heatmap="npy", heatmap_size="layer", quiet=True)
    else:
        module = small_swin3d() if case == "swin3d" else small_mvit()
        run = camcli.explain(clips / "a.mp4", module, clip_len=8, input_size=32, mean=[0.45] * 3, std=[0.225] * 3,
                             out=out, save_heatmap="npy", heatmap_size="layer", quiet=True)
    list(run)
    assert run.summary.ok == 1
    row = rows(out)[0]
    mine = np.load(out / row["heatmap"])
    loaded = run.session.loaded
    model = loaded.model
    x = the_clip(clips / "a.mp4", loaded.input_size, loaded.clip.resize, loaded.mean, loaded.std)
    if case == "r3d_18":
        layer, reshape = model.layer4, None
    elif case == "swin3d":
        layer, reshape = model.norm, (lambda t: t.permute(0, 4, 1, 2, 3))
    else:
        layer, reshape = model.blocks[-1].norm1, tokens_to_map(mine.shape)
    shape = mine.shape

    class AtLayer(pgc.GradCAM):  # pytorch-grad-cam zooms to the input; here it stays at the layer's size
        def get_target_width_height(self, input_tensor):
            return tuple(reversed(shape))

    target = int(row["pred_index"])
    with AtLayer(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
    assert theirs.shape == mine.shape
    assert mine.std() > 0 and pearson(mine, theirs) >= 0.99, (case, pearson(mine, theirs))
    print(case, shape, pearson(mine, theirs))


def test_frames_are_fitted_as_torchvisions_video_transforms_fit_them(clips):
    """The clip camcli makes of a video equals what R3D's weights' transforms make of its frames
    (resize to 128 x 171 with antialiasing, centre crop 112, normalise): camcli shrinks with area
    averaging, so values agree to a few hundredths, never a pixel's shift."""
    import torchvision

    from camcli.engine.clips import framing, probe, read_frames
    from camcli.models.video_models import preset_of

    weights = torchvision.models.video.R3D_18_Weights.KINETICS400_V1
    video = probe(str(clips / "a.mp4"))
    frames = [rgb for _, rgb in read_frames(video, 0, 16)]
    preset = preset_of(weights)
    assert (preset.clip_len, preset.frame_rate, preset.resize) == (16, 15.0, (128, 171))
    big = [cv2.resize(f, (W * 4, H * 4), interpolation=cv2.INTER_NEAREST) for f in frames]  # larger than 128 x 171
    fit = framing(big[0].shape[:2], (112, 112), preset.resize)
    mine = torch.from_numpy(np.stack([fit.fit(f) for f in big])).permute(3, 0, 1, 2).float() / 255
    mean, std = torch.tensor(weights.transforms().mean).view(3, 1, 1, 1), torch.tensor(weights.transforms().std).view(3, 1, 1, 1)
    mine = (mine - mean) / std
    theirs = weights.transforms()(torch.from_numpy(np.stack(big)).permute(0, 3, 1, 2))  # (T, C, H, W) uint8 in
    assert theirs.shape == mine.shape == (3, 16, 112, 112)
    assert (mine - theirs).abs().mean() < 0.03 * float(std.mean().reciprocal()), (mine - theirs).abs().mean()
    assert pearson(mine, theirs) > 0.995


def test_a_finished_video_is_not_explained_again_on_resume(clips, tmp_path):
    out = tmp_path / "out"
    r = motion(clips, out, inputs=[clips / "a.mp4", clips / "b.avi"])
    assert r.exit_code == 0, r.output
    first = (out / rows(out)[0]["output"]).stat().st_mtime_ns
    (out / rows(out)[1]["output"]).unlink()  # b.avi's overlay lost: it is done again
    r = motion(clips, out, "--resume", inputs=[clips / "a.mp4", clips / "b.avi"])
    assert r.exit_code == 0, r.output
    assert "1 already done" in r.stderr
    assert (out / rows(out)[0]["output"]).stat().st_mtime_ns == first
    assert (out / rows(out)[1]["output"]).is_file() and len(rows(out)) == 2


@pytest.mark.slow
def test_the_demo_tells_which_shape_moves_and_its_map_follows_it(tmp_path):
    """configs/demo-video.toml on sample_videos/: every clip's moving shape named, and in most frames
    the map's peak on it (boxes.csv, from the generator that drew the clips, not the training one)."""
    out = tmp_path / "demo"
    r = explain(ROOT / "sample_videos", out, "--config", str(ROOT / "configs" / "demo-video.toml"), "--save-heatmap",
                "npy")
    assert r.exit_code == 0, r.output
    boxes: dict[tuple[str, int], tuple] = {}
    with open(ROOT / "sample_videos" / "boxes.csv", newline="") as f:
        for b in csv.DictReader(f):
            boxes[b["path"], int(b["frame"])] = (b["label"], *(float(b[c]) for c in ("x0", "y0", "x1", "y1")))
    found = rows(out)
    assert len(found) == 6
    hits = frames = 0
    for row in found:
        label = boxes[row["path"], 0][0]
        assert row["pred_label"] == label, row
        heat = np.load(out / row["heatmap"])
        start = int(row["start_frame"])
        for k, m in enumerate(heat):
            y, x = np.unravel_index(int(m.argmax()), m.shape)
            _, x0, y0, x1, y1 = boxes[row["path"], start + k]
            slack = int(row["width"]) / 32
            hits += x0 - slack <= x <= x1 + slack and y0 - slack <= y <= y1 + slack
            frames += 1
    assert hits / frames >= 0.6, hits / frames


def test_shards_split_videos_and_keep_a_folder_of_frames_whole(clips, tmp_path):
    """Two shards of a folder with a folder of frames: every video in exactly one shard, the frames
    folder one clip in one of them; frames above `max_pixels` are refused before they are decoded."""
    out = tmp_path / "out"
    seen = []
    for index in (0, 1):
        r = motion(clips, out, "--shard", f"{index}/2", inputs=[clips / "a.mp4", clips / "d_frames", clips / "c.gif"])
        assert r.exit_code == 0, r.output
        with open(out / f"clips.part-{index:03d}-of-002.csv", newline="") as f:
            seen += [row["path"] for row in csv.DictReader(f)]
    assert sorted(seen) == ["a.mp4", "c.gif", "d_frames"]
    r = motion(clips, tmp_path / "still", inputs=[clips / "a.mp4", clips / "d_frames" / "000.png"])
    assert r.exit_code == 1 and "not a video (an image)" in rows(tmp_path / "still")[1]["error"]
    from camcli.cli import app

    r = CliRunner().invoke(app, ["audit", str(tmp_path / "still")])  # a video run's maps are no pictures
    assert r.exit_code == 2 and "is a video run: its maps are three-dimensional" in r.stderr
    r = motion(clips, tmp_path / "big", "--max-pixels", "1000", inputs=clips / "a.mp4")
    error = rows(tmp_path / "big")[0]["error"]
    assert r.exit_code == 1 and "frames of 96x64 exceed" in error and "1000" in error


def test_a_named_video_model_loads_from_the_hub_cache_or_a_checkpoint(clips, tmp_path, monkeypatch):
    """r3d_18 with its Kinetics weights from a pre-filled torch hub cache (seeded stand-in weights:
    nothing is downloaded), named by Kinetics' labels; and a fine-tuned checkpoint of 3 classes."""
    import torchvision
    from safetensors.torch import save_file

    from camcli.models import hub_cache_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    weights = torchvision.models.video.R3D_18_Weights.KINETICS400_V1
    torch.manual_seed(0)
    target = hub_cache_file(weights)
    target.parent.mkdir(parents=True)
    torch.save(torchvision.models.video.r3d_18().state_dict(), target)
    out = tmp_path / "cached"
    r = explain(clips / "b.avi", out, "--model", "r3d_18", "--clip-len", "8", "--input-size", "48", "--json")
    assert r.exit_code == 0, r.output
    row = rows(out)[0]
    assert row["pred_label"] in weights.meta["categories"]
    assert json.loads((out / "run.json").read_text())["model"]["clip"] == {"clip_len": 8, "frame_rate": 15.0,
                                                                          "resize": [128, 171]}
    small = torchvision.models.video.r3d_18(num_classes=3)
    save_file(small.state_dict(), str(tmp_path / "tuned.safetensors"))
    (tmp_path / "labels.txt").write_text("walk\nrun\njump\n")
    out = tmp_path / "tuned"
    r = explain(clips / "b.avi", out, "--model", "r3d_18", "--checkpoint", str(tmp_path / "tuned.safetensors"),
                "--labels", str(tmp_path / "labels.txt"), "--clip-len", "8", "--input-size", "48")
    assert r.exit_code == 0, r.output
    assert rows(out)[0]["pred_label"] in {"walk", "run", "jump"}
    r = explain(clips / "b.avi", tmp_path / "both", "--model", "r3d_18", "--weights", "KINETICS400_V1",
                "--checkpoint", str(tmp_path / "tuned.safetensors"))
    assert r.exit_code == 2 and "exclude each other" in r.stderr
