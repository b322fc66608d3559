"""Every option of ``camcli explain``, declared once.

Each field of :class:`ExplainSettings` carries its default and, in its metadata, what the
command line needs to offer it (help text, help panel, short flag, the default as shown) and
whether it shapes what a run writes (``--resume`` compares those). The CLI builds its options
from these fields; the Python API takes them as keywords; config files and ``CAMCLI_*``
variables use the same names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from camcli.engine import DEFAULT_MAX_PIXELS, method_options


def method_option(name: str) -> Any:
    """A method's option as a settings field: help, default as shown and whether it shapes the
    outputs come from its declaration (:mod:`camcli.engine.method_options`)."""
    declared = method_options.BY_NAME[name]
    return option(None, declared.help, "Explanation", shown=declared.shown, shapes_outputs=declared.shapes_outputs,
                  evaluate=True)


def option(default: Any = None, help: str = "", panel: str = "Run", *, short: str | None = None,
           shown: str | None = None, shapes_outputs: bool = False, evaluate: bool = False,
           presentation: bool = False, factory=None) -> Any:
    """A settings field with what the CLI needs to offer it.

    ``shown``: the default as ``--help`` shows it (``None``: the default itself, when it is not
    empty); ``shapes_outputs``: a resumed run must match it; ``presentation``: it only changes how
    results are shown (overlay look, gallery, panels), so a resumed run may change it (images
    finished earlier keep their files); ``evaluate``: ``camcli evaluate`` offers it too, when it
    explains images itself.
    """
    meta = {"help": help, "panel": panel, "short": short, "shown": shown, "shapes_outputs": shapes_outputs,
            "evaluate": evaluate, "presentation": presentation}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ExplainSettings:
    """Every option of ``camcli explain``, with its default."""

    out: str = option("runs/explain", "Output folder for overlays/, predictions.csv and run.json. Not given: a new "
                      "one each run (runs/explain, runs/explain2, ...), and --resume continues the latest.", "Run",
                      short="-o", shown="runs/explain, runs/explain2, ...")
    model: str = option("resnet50", "torchvision architecture (resnet50, see `camcli models`), timm/NAME, or your own "
                        "model's factory: path/to/file.py:function or package.module:function, a callable that "
                        "returns the nn.Module (--checkpoint then loads a state dict into it). Not needed for a "
                        "whole pickled model (--trust-checkpoint).", "Model",
                        short="-m", shapes_outputs=True, evaluate=True)
    model_arg: list[str] = option(help="key=value keyword argument for a factory or monai/NAME --model (repeat for several; values "
                                  "read as Python literals: 10, 0.5, True, 'text').", panel="Model",
                                  shapes_outputs=True, evaluate=True, factory=list)
    weights: str = option("DEFAULT", "torchvision weights: DEFAULT, IMAGENET1K_V1, ... or none. Loaded from the torch "
                          "hub cache, downloaded if missing.", "Model", shapes_outputs=True, evaluate=True)
    checkpoint: str | None = option(None, "Your weights: a state dict (.pt/.pth, loaded with weights_only=True) or "
                                    ".safetensors for --model's architecture.", "Model", shapes_outputs=True,
                                    evaluate=True)
    num_classes: int | None = option(None, "Classes of the checkpoint's head.", "Model", shown="read from the checkpoint",
                                     shapes_outputs=True, evaluate=True)
    labels: str | None = option(None, "Class names: a text file (one per line) or JSON.", "Model",
                                shown="from the weights, else class_N", shapes_outputs=True, evaluate=True)
    input_size: int | None = option(None, "Side of the square model input; each image is fitted to it as --resize "
                                    "says.",
                                    "Model", shown="the weights' crop size, else 224", shapes_outputs=True,
                                    evaluate=True)
    mean: str | None = option(None, "Per-channel mean the model was trained with, comma-separated (0.5,0.5,0.5; one "
                              "value for all channels); replaces the weights' normalisation.", "Model",
                              shown="the weights', else ImageNet's", shapes_outputs=True, evaluate=True)
    std: str | None = option(None, "Per-channel standard deviation, as --mean.", "Model",
                             shown="the weights', else ImageNet's", shapes_outputs=True, evaluate=True)
    resize: str = option("stretch", "How each image is fitted to the model's input: stretch (all of it, squashed to "
                         "the input's shape), letterbox (aspect kept, padded with the mean colour) or crop (aspect "
                         "kept, centre-cropped as torchvision's presets do). Maps go back onto the original exactly.",
                         "Model", shapes_outputs=True, evaluate=True)
    trust_checkpoint: bool = option(False, "Allow a whole pickled model or TorchScript file as --checkpoint. "
                                    "Unpickling runs code: only for files you trust.", "Model", evaluate=True)
    method: list[str] = option(help="CAM method(s), comma-separated or repeated (see `camcli methods`). Left out: "
                               "gradcam; a detection run takes layercam (its maps peak inside their own box far more "
                               "often than Grad-CAM's: docs/detection.md) and a YOLO model eigencam, and the log says "
                               "so.", panel="Explanation", shown="gradcam; detection: layercam", shapes_outputs=True,
                               evaluate=True,
                               factory=lambda: ["gradcam"])
    layer: list[str] = option(help="Target layer(s), e.g. 'layer4[1]' or layer4.1; repeat for several (see `camcli "
                              "layers MODEL`).", panel="Explanation", shown="the last spatial layer",
                              shapes_outputs=True, evaluate=True, factory=list)
    layer_layout: str = option("auto", "How a layer's output reads as a map: auto (detected from the shapes; refused "
                               "when ambiguous), nchw, nhwc (channels-last, Swin) or tokens (ViT). One value for "
                               "all layers, or one per --layer, comma-separated.", "Explanation",
                               shapes_outputs=True, evaluate=True)
    target: str | None = option(None, "Class(es) to explain in every image: indices or label names, comma-separated "
                                "(several: each its own row and overlay). The binary head's are its negative and "
                                "positive class.", "Explanation",
                                shown="each image's top-1 class", shapes_outputs=True, evaluate=True)
    head: str = option("auto", "How the model's outputs read: softmax (classes that exclude each other), sigmoid "
                       "(independent labels: every label over --threshold is explained), binary (one logit: the "
                       "positive class, and its negation the negative one) or regression (values, explained as "
                       "--direction says). auto: one output is binary, a model ending in its own Sigmoid or Softmax "
                       "gives those probabilities (never squashed twice), anything else softmax.", "Explanation",
                       shapes_outputs=True, evaluate=True)
    threshold: float | None = option(None, "Sigmoid head: the probability from which a label counts as present and is "
                                     "explained.", "Explanation", shown="0.5", shapes_outputs=True, evaluate=True)
    explain_topk: int | None = option(None, "Explain each image's K best classes (any head), each its own row and "
                                      "overlay.", "Explanation", shown="1; the sigmoid head: labels over --threshold",
                                      shapes_outputs=True, evaluate=True)
    output: str | None = option(None, "Which part of the model's output to explain when it is a tuple, dict or "
                                "output object: an index (0) or a name (logits, pooler_output).", "Explanation",
                                shown="a tensor itself, else its logits, else its first tensor", shapes_outputs=True,
                                evaluate=True)
    target_image: str | None = option(None, "Explain the cosine similarity of each image's embedding (the model's "
                                      "output) to this image's embedding, fed as the images are.", "Explanation",
                                      shapes_outputs=True, evaluate=True)
    target_embedding: str | None = option(None, "As --target-image, with the reference embedding read from a .npy "
                                          "file (one vector).", "Explanation", shapes_outputs=True, evaluate=True)
    direction: str = option("higher", "Regression head: explain what makes the output higher, or lower.",
                            "Explanation", shapes_outputs=True, evaluate=True)
    score: str = option("logit", "Score explained: logit (what the Grad-CAM, Grad-CAM++ and Score-CAM papers and "
                        "pytorch-grad-cam use) or probability (the head's: softmax, or sigmoid; `softmax` is an old "
                        "spelling of it).", "Explanation", shapes_outputs=True, evaluate=True)
    task: str = option("auto", "What the model does: classification (scores per image), detection (boxes: "
                       "torchvision's detectors, see `camcli models`) or segmentation (scores per pixel: "
                       "torchvision's and HuggingFace's segmenters, or your own model); auto reads it from the "
                       "model.", "Detection", shapes_outputs=True, evaluate=True)
    score_threshold: float = option(0.5, "Detection: explain the boxes whose score is at least this.", "Detection",
                                    shapes_outputs=True, evaluate=True)
    max_detections: int = option(20, "Detection: explain at most this many boxes per image, best first.",
                                 "Detection", shapes_outputs=True, evaluate=True)
    detection_maps: str = option("each", "Detection overlays: each (one per box, its box drawn) or combined (one per "
                                 "image, method and layer: the per-pixel maximum of its boxes' maps, every box "
                                 "drawn).", "Detection", shapes_outputs=True)
    min_area: float = option(0.01, "Segmentation: explain each class whose predicted mask covers at least this "
                             "share of the image (of --region, when given).", "Segmentation", shapes_outputs=True,
                             evaluate=True)
    background: bool = option(False, "Segmentation: explain the background class too (class 0 named background, "
                              "or a binary segmenter's negative side).", "Segmentation", shapes_outputs=True,
                              evaluate=True)
    region: str | None = option(None, "Segmentation: explain each class's scores summed over this region instead of "
                                "over its own predicted mask: x0,y0,x1,y1 in image pixels, or a folder of mask images "
                                "(one per image, by relative path: a.jpg -> a.png; nonzero is the region).",
                                "Segmentation", shown="each class's own mask", shapes_outputs=True, evaluate=True)
    save_mask: bool = option(False, "Segmentation: also write each image's predicted label mask under masks/ (PNG "
                             "of class indices, with a palette).", "Segmentation", shapes_outputs=True)
    window: str | None = option(None, "Volumes: a CT window, level,width in Hounsfield units (40,80) or one of brain, "
                                "subdural, stroke, lung, mediastinum, soft-tissue, liver, bone; values outside go "
                                "black or white, as the model was trained to see them.", "Volumes",
                                shown="none: --scaling per volume", shapes_outputs=True, evaluate=True)
    scaling: str = option("percentiles", "Volumes without --window: how each scan's values become the model's input: "
                          "percentiles (0.5th to 99.5th percentile to 0..1, clipped), minmax (MONAI's "
                          "ScaleIntensity), zscore (MONAI's NormalizeIntensity) or none.", "Volumes",
                          shapes_outputs=True, evaluate=True)
    clips: str = option("one", "Video: which clips of each video are explained: one (the middle of it), N (N evenly "
                        "spaced, first to last frame) or all (back to back over the whole video); a row and an "
                        "overlay video per clip.", "Video", shapes_outputs=True)
    clip_len: int | None = option(None, "Video: frames per clip fed to the model.", "Video",
                                  shown="the weights' (16 for R3D, 32 for Swin3D), else 16", shapes_outputs=True)
    clip_fps: float | None = option(None, "Video: frames per second sampled into a clip (the source's frame rate "
                                    "divided to the nearest whole step).", "Video",
                                    shown="the weights' (15 for R3D), else every frame", shapes_outputs=True)
    frames_fps: float | None = option(None, "Video: the frame rate of a folder of frames (one clip, frames in name "
                                      "order) and of a video that states none.", "Video", shown="25",
                                      shapes_outputs=True)
    cam_batch_size: int | None = method_option("cam_batch_size")
    max_n: int | None = method_option("max_n")
    fem_k: float | None = method_option("fem_k")
    kpca_kernel: str | None = method_option("kpca_kernel")
    kpca_gamma: float | None = method_option("kpca_gamma")
    finer_alpha: float | None = method_option("finer_alpha")
    noise_samples: int | None = method_option("noise_samples")
    noise_std: float | None = method_option("noise_std")
    fuse: str | None = option(None, "Also fuse each method's maps at all --layer layers into one map: max "
                              "(torchcam's fuse_cams), mean or product (RefineCAM's); written as its own overlay and "
                              "row, layer named as the set (layer3+layer4[1]).", "Explanation", shown="no fusion",
                              shapes_outputs=True, evaluate=True)
    eigen_smooth: bool = option(False, "Replace each method's weighted channel sum by its first principal component "
                                "(pytorch-grad-cam's eigen_smooth): less noise, and it keeps the main object only. "
                                "Refused for eigencam, eigengradcam and kpcacam, which are components already.",
                                "Explanation", shapes_outputs=True, evaluate=True)
    aug_smooth: bool = option(False, "Test-time augmentation: explain each image also flipped and at 0.9x and 1.1x "
                              "brightness (six versions, as pytorch-grad-cam's aug_smooth), flip the maps back and "
                              "average them. Six times the cost.", "Explanation", shapes_outputs=True, evaluate=True)
    seed: int = option(0, "Seed for the methods that draw random numbers (randomcam, sscam, smoothgradcam++); each image's numbers come "
                       "from this seed and its path, so reruns, resumed runs and shards agree.", "Explanation",
                       shown="0", shapes_outputs=True, evaluate=True)
    strict: bool = option(False, "Stop with a usage error (exit 2) when a method's assumption fails at a layer "
                          "(signed activations for gradcam++ and xgradcam, an ill-defined principal component "
                          "for eigencam) instead of warning and going on.", "Explanation")
    alpha: float = option(0.5, "Heatmap opacity over the image, 0..1.", "Output", presentation=True)
    colormap: str = option("jet", "OpenCV colour map: jet, turbo, viridis, inferno, magma, ...", "Output",
                           presentation=True)
    overlay_format: str = option("png", "Overlay file format: png (lossless, largest), jpg or webp (a few percent of "
                                 "the size; see --overlay-quality).", "Output", presentation=True)
    overlay_quality: int = option(90, "JPEG or WebP quality of the overlays, 1..100 (jpg and webp only).", "Output",
                                  presentation=True)
    overlay_max_side: int | None = option(None, "Scale overlays (and panels) down so that their longer side is at "
                                          "most N pixels; boxes, CSV coordinates and saved heatmaps stay in "
                                          "original-image pixels.", "Output", shown="original size",
                                          presentation=True)
    topk: int = option(1, "Write the K best classes as top1..topK columns.", "Output", shapes_outputs=True)
    save_heatmap: str | None = option(None, "Also write each raw normalised map under heatmaps/: npy (float32) or "
                                      "png16 (16-bit grayscale).", "Output", shapes_outputs=True)
    heatmap_size: str = option("image", "Resolution of --save-heatmap maps: image (original size) or layer.", "Output",
                               shapes_outputs=True)
    caption: bool = option(False, "Write the predicted label and score (and the explained class, if different) on "
                           "each overlay.", "Output", presentation=True)
    panel: bool = option(False, "Write panels/<image>.panel.png: the original beside one titled overlay per method x layer.",
                         "Output", presentation=True)
    grid: bool = option(False, "Write contact sheets grid/sheet_NNN.png: 36 captioned thumbnails each.", "Output",
                        presentation=True)
    html: bool = option(False, "Write index.html: a gallery of the run that opens in any browser, no server needed.",
                        "Output", presentation=True)
    boxes: bool = option(False, "Find a box in each heatmap (threshold, contours) and write it to the CSV (box_* "
                         "columns, original-image pixels).", "Boxes", shapes_outputs=True)
    box_threshold: float = option(0.5, "Keep pixels >= this share of the map's maximum (half maximum suits the coarse "
                                  "maps of last blocks; the CAM paper used 0.2 on ImageNet).", "Boxes",
                                  shapes_outputs=True)
    box_mode: str = option("largest", "largest: the largest region; all: every region above --box-min-area "
                           "(boxes_all column).", "Boxes", shapes_outputs=True)
    box_min_area: float = option(0.01, "With --box-mode all: smallest region kept, as a share of the image area.",
                                 "Boxes", shapes_outputs=True)
    box_rotated: bool = option(False, "Also write the minAreaRect rotated box's corners (box_rotated column).", "Boxes",
                               shapes_outputs=True)
    draw_boxes: bool = option(False, "Draw the boxes on the overlays (implies --boxes).", "Boxes", shapes_outputs=True)
    hidden: bool = option(False, "Include hidden files and folders (names starting with '.') when walking folders.",
                          "Run", shapes_outputs=True, evaluate=True)
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "Refuse images larger than this many pixels (decompression-bomb "
                             "guard).", "Run", shown=f"{DEFAULT_MAX_PIXELS}, Pillow's", shapes_outputs=True,
                             evaluate=True)
    fail_fast: bool = option(False, "Stop at the first image that fails (its row is written; exit 1).", "Run")
    resume: bool = option(False, "Continue a run in the same --out: images whose rows and files are complete are "
                          "skipped; refused if settings differ.", "Run")
    overwrite: bool = option(False, "Replace camcli's earlier outputs in a non-empty --out (other files are left "
                             "alone).", "Run")
    shard: str | None = option(None, "INDEX/COUNT: process only this share of the sorted images (cluster array jobs); "
                               "join parts with `camcli merge`. Under torchrun, RANK/WORLD_SIZE do this.", "Run",
                               shapes_outputs=True)
    quiet: bool = option(False, "No progress bar and no log lines; errors only.", "Run", short="-q")
    batch_size: int = option(16, "Images per forward pass.", "Performance", short="-b", evaluate=True)
    workers: int = option(2, "Processes decoding images; 0 decodes in the main process.", "Performance", short="-j",
                          evaluate=True)
    device: str = option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.", "Performance",
                         evaluate=True)
    memory_budget: int | None = option(None, "Megabytes for images in flight: decoded originals waiting to be "
                                       "explained or written and the buffers overlays are rendered in. Batches, "
                                       "prefetch and writer threads shrink to fit; an image larger than the budget "
                                       "is processed alone.", "Performance",
                                       shown="a quarter of the available memory, at most 768")
    precision: str = option("fp32", "fp32, or bf16/fp16 autocast for the forward pass (CUDA only; maps stay float32).",
                            "Performance", evaluate=True)
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(ExplainSettings) if f.name != "sources"}

#: settings that only change how results are shown; recorded, but a resumed run may change them
PRESENTATION_KEYS: tuple[str, ...] = tuple(name for name, f in FIELDS.items() if f.metadata["presentation"])

#: settings that change what a run computes and the CSV says; a resumed run must match them exactly
OUTPUT_KEYS: tuple[str, ...] = tuple(name for name, f in FIELDS.items() if f.metadata["shapes_outputs"])

#: settings ``camcli evaluate`` takes when it explains images itself (model, method, performance)
EVALUATE_KEYS: tuple[str, ...] = tuple(name for name, f in FIELDS.items() if f.metadata["evaluate"])


def kind(name: str) -> type:
    """The plain type of a field: bool, int, float, list (of str) or str."""
    text = str(FIELDS[name].type)
    for t in (bool, list, int, float):
        if t.__name__ in text:
            return t
    return str


def shown_default(name: str) -> str | None:
    """The default as ``--help`` and the docs show it, or ``None`` when there is nothing to show."""
    f = FIELDS[name]
    if f.metadata["shown"] is not None:
        return f.metadata["shown"]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default in (None, False, [], ""):
        return None
    return str(default)
