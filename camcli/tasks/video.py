"""Video: a classifier of clips (torchvision's R3D, MC3, R(2+1)D, S3D, MViT, Swin3D, or one's
own), explained on video files, animated GIFs and folders of frames; each clip window's map
covers every frame it spans.

Clips are sampled as the weights were measured (their clip length and frame rate, the frames
resized and centre-cropped by their transforms), one per video, N evenly spaced, or back to
back over all of it (``clips``). The map of a clip is the layer's (t, h, w) map (MViT's tokens
and Swin3D's channels-last stages read as such, the grids from the model), brought to each frame
linearly in time and bilinearly in space. Each window gets a row, an overlay video at the
source's frame rate and a strip of frames.
"""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

from camcli.output.rows import VIDEO_COLUMNS, VideoRow
from camcli.tasks.task import Built, Task


class Video(Task):
    name = "video"
    description = ("a video classifier: one class per clip (video files, animated GIFs, folders of frames); each "
                   "map explains a clip's top class over every frame it spans")
    model_in_words = "a video classifier: it scores clips of frames"
    row_type = VideoRow
    csv_stem = "clips"
    inputs = "video"
    stated_from = ("volume",)
    takes = frozenset({"clips", "clip_len", "clip_fps", "frames_fps", "input_size", "mean", "std", "aug_smooth",
                       "fuse"})
    refusal_reason = "each clip's top class is explained, its frames fitted as the weights' transforms fit them"
    evaluated_per = "clip"
    evaluated_from_runs_only = ("a video run is not scored by `camcli evaluate` yet (its rows give each clip's "
                                "prediction and the frame and pixel where its map peaks)")

    def known_models(self) -> list[str]:
        from camcli.models.video_models import video_models

        return video_models()

    def claims(self, loaded) -> bool:
        """torchvision's video classes, by name or handed over (a 3D network of one's own is a
        volume model unless ``task`` says video)."""
        from camcli.models.video_models import is_video_model

        return loaded.clip is not None or is_video_model(loaded.model)

    def not_stated_of(self, found, loaded) -> str:
        return (f"`task` video, but {loaded.architecture} is {found.model_in_words or found.name}: a video model's "
                "first convolution is three-dimensional and takes RGB frames")

    def gathered(self, items):
        from camcli.engine.discovery import as_videos

        return as_videos(items)

    def layer_defaults(self, loaded, infos):
        return default_video_layer(loaded.model, self._clip_size(loaded, None, None), "cpu"), set()

    def earlier_layer(self, loaded, layer, device) -> str | None:
        return None  # the layer search traces images

    def open(self, settings, device, loaded, methods) -> Built:
        """The clip's size from the weights or the settings (MViT's fixed), the default layer per
        family, every method checked on a dummy clip (those defined on flat images are refused)."""
        from camcli.engine.explainer import Explainer
        from camcli.engine.layer_names import resolve_layer
        from camcli.engine.layouts import NotAMap
        from camcli.errors import UsageError
        from camcli.models.video_models import ClipPreset

        if settings.save_heatmap == "png16":
            raise UsageError("`save_heatmap` png16 holds one picture; a clip's map is (frames, H, W): use npy")
        if loaded.input_channels != 3:
            raise UsageError(f"a video model takes RGB frames; {loaded.architecture}'s first convolution takes "
                             f"{loaded.input_channels} channel(s)")
        size = self._clip_size(loaded, settings.clip_len, settings.input_size)
        preset = loaded.clip or ClipPreset(size[0])
        loaded = replace(loaded, input_size=size, clip=ClipPreset(size[0], preset.frame_rate, preset.resize),
                         task=self.name)
        model = loaded.model
        layers = ([resolve_layer(model, spec) for spec in settings.layer] if settings.layer else
                  [default_video_layer(model, size, device)])
        explainer = Explainer(model, layers, methods, strict=settings.strict, layer_layout=settings.layer_layout,
                              aug_smooth=settings.aug_smooth, fuse=settings.fuse)
        try:
            explainer.validate(size, device, channels=3)
        except NotAMap as e:
            raise UsageError(f"{e}; name a layer whose output is a (t, h, w) map with `layer` (see `camcli layers`)"
                             ) from None
        batch = clip_batch(settings, size)
        notes = [f"batches of up to {batch} clips (each of {size[0]} frames weighs as much as {size[0]} images; "
                 "`batch_size` sets it)"] if batch < settings.batch_size else []
        return Built(loaded, explainer.layers, methods, explainer, notes=notes)

    @staticmethod
    def _clip_size(loaded, clip_len: int | None, side: int | None) -> tuple[int, int, int]:
        """(frames, h, w) of the model's clips: MViT's own size (others refused), else the settings',
        else the weights', else 16 frames of 112 x 112."""
        from camcli.errors import UsageError
        from camcli.models.video_models import DEFAULT_CLIP_LEN, DEFAULT_SIDE, fixed_clip

        fixed = fixed_clip(loaded.model)
        if fixed:
            if clip_len not in (None, fixed[0]) or side not in (None, fixed[1]):
                raise UsageError(f"{loaded.architecture} takes clips of {fixed[0]} frames of {fixed[1]}x{fixed[2]} "
                                 "only (its token grid is built for them); leave `clip_len` and `input_size` out")
            return fixed
        frames = clip_len or (loaded.clip.clip_len if loaded.clip is not None else DEFAULT_CLIP_LEN)
        if side:
            return (frames, side, side)
        return (frames, *loaded.input_size[1:]) if loaded.clip is not None else (frames, DEFAULT_SIDE, DEFAULT_SIDE)

    def input_in_words(self, loaded) -> str:
        t, h, w = loaded.input_size
        return f"clips of {t} frames of {w}x{h}; "

    def explained(self, session) -> str:
        s, clip = session.settings, session.loaded.clip
        rate = s.clip_fps or clip.frame_rate
        which = {"one": "one clip per video (its middle)", "all": "clips back to back over each video"}.get(
            str(s.clips), f"{s.clips} evenly spaced clips per video")
        return (f"video classifier: each clip's top class; {which}, frames sampled at "
                + (f"{rate:g} fps" if rate else "the source's rate"))

    def results(self, session, items, skip, plan):
        from camcli.engine.video_stream import Sampling, iter_videos

        s, clip = session.settings, session.loaded.clip
        sampling = Sampling(clip.clip_len, s.clip_fps or clip.frame_rate, str(s.clips), clip.resize, s.frames_fps,
                            s.max_pixels)
        batch = min(session.batch_size, clip_batch(s, session.loaded.input_size))
        return iter_videos(session.loaded, session.explainer, items, sampling, batch_size=batch,
                           prefetch=plan.prefetch if plan else 2, device=session.device, skip=skip, seed=s.seed)

    def plan_in_words(self, session, plan) -> str:
        batch = min(session.batch_size, clip_batch(session.settings, session.loaded.input_size))
        return (f"batches of up to {batch} clip(s), one decoding thread, {plan.prefetch} batch(es) read ahead, "
                f"{plan.writer_threads} writer thread(s)")

    def header(self, settings, session) -> list[str]:
        return list(VIDEO_COLUMNS)

    def write(self, result, out: Path, settings):
        from camcli.output.video_writer import write_video

        return write_video(result, out, settings)

    def json_entries(self, rows) -> dict:
        """The video's frames and rate, and per clip window its prediction and maps."""
        first = rows[0]
        clips: dict[int, dict] = {}
        for r in rows:
            if r.clip is None:
                continue
            entry = clips.setdefault(r.clip, {
                "clip": r.clip, "start_frame": r.start_frame, "end_frame": r.end_frame, "start_time": r.start_time,
                "end_time": r.end_time, "error": r.error or None if r.method is None else None,
                "prediction": {"index": r.pred_index, "label": r.pred_label, "score": r.score}
                if r.pred_index is not None else None, "maps": []})
            if r.method:
                entry["maps"].append({"method": r.method, "layer": r.layer, "overlay": r.output, "strip": r.strip,
                                      "heatmap": r.heatmap, "peak_frame": r.peak_frame, "peak_time": r.peak_time,
                                      "peak": [r.peak_x, r.peak_y] if r.peak_x is not None else None,
                                      "empty_map": r.empty_map, "warning": r.warning, "error": r.error or None})
        return {"width": first.width, "height": first.height, "fps": first.fps, "frames": first.frames,
                "note": first.note or None, "clips": list(clips.values())}

    def gallery_card(self, rows):
        """Every clip's every map as a button; the card plays the first; sorted by the first clip's score."""
        first = rows[0]
        maps = [(f"{r.method}@{r.layer}" + (f" clip {r.clip}" if (first.clips or 1) > 1 else ""), r.output)
                for r in rows if r.output]
        pred = "-"
        if first.score is not None:
            pred = f"{html.escape(str(first.pred_label))} {first.score:.3f}"
            labels = list(dict.fromkeys(r.pred_label for r in rows if r.pred_label))
            if len(labels) > 1:
                pred += html.escape(f" (clips: {', '.join(labels)})")
        return maps, first.score, pred

    def gallery_more(self, rows, out) -> str:
        """The strip of the card's first map: the frames at a glance, beside the playing overlay."""
        from urllib.parse import quote

        strip = next((r.strip for r in rows if r.strip), None)
        if not strip or not (out / strip).is_file():
            return ""
        return (f'<a href="{html.escape(quote(strip, safe="/@"))}"><img loading="lazy" class="strip" '
                f'src="{html.escape(quote(strip, safe="/@"))}" alt="frames"></a>')

    def evaluate_run(self, folder, truth, normalized, tolerance, gates):
        from camcli.errors import UsageError

        raise UsageError(self.evaluated_from_runs_only)


#: the input voxels of a batch of clips when ``batch_size`` is not given: 16 of R3D's 16 x 112 x 112
#: clips, 2 of Swin3D's 32 x 224 x 224 (an image batch's default of 16 would hold 13 GB of Swin3D-B's
#: activations)
BATCH_VOXELS = 16 * 16 * 112 * 112


def clip_batch(settings, size: tuple[int, int, int]) -> int:
    """Clips per shared forward: ``batch_size`` when given, else as many as :data:`BATCH_VOXELS` hold."""
    if settings.sources.get("batch_size", "default") != "default":
        return settings.batch_size
    return max(1, min(settings.batch_size, BATCH_VOXELS // (size[0] * size[1] * size[2])))


def default_video_layer(model, size: tuple[int, int, int], device) -> str:
    """The layer a video model is explained at when none is named: R3D/MC3/R(2+1)D's ``layer4``,
    S3D's ``features`` (its last mixed block), MViT's last block's ``norm1`` (what its attention
    reads: its output reaches the head through the class token alone, so its patch tokens get no
    gradient), Swin3D's ``norm``; another 3D network's last 3D feature map before its scores."""
    from camcli.models.video_models import is_video_model

    if not is_video_model(model):
        from camcli.tasks.volume import default_volume_layer

        return default_volume_layer(model, size, 3, device)
    from torchvision.models.video import MViT, S3D, SwinTransformer3d, VideoResNet

    if isinstance(model, VideoResNet):
        return "layer4"
    if isinstance(model, S3D):
        return "features"
    if isinstance(model, MViT):
        return f"blocks.{len(model.blocks) - 1}.norm1"
    if isinstance(model, SwinTransformer3d):
        return "norm"
    raise AssertionError(type(model))


TASK = Video()
