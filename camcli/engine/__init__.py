"""The engine: images in, maps out.

It finds and decodes images (:mod:`.images`), picks the device (:mod:`.devices`), runs one
shared forward per batch for every method at every layer (:mod:`.explainer`, :mod:`.methods`)
and streams per-image results in input order (:mod:`.stream`). It knows nothing of output
folders, CSV files or evaluation, and never touches process-wide state (signals, Pillow's
global limits): a notebook and the command line drive it the same way.
"""

#: Pillow's own decompression-bomb limit (89.5 megapixels); the ``max_pixels`` setting changes it
DEFAULT_MAX_PIXELS = 89_478_485
#: how an image is fitted to the model input (the ``resize`` setting; :mod:`.framing`)
RESIZE_MODES = ("stretch", "letterbox", "crop")
#: how ``fuse`` combines a method's maps at several layers (:mod:`.fusion`)
FUSIONS = ("max", "mean", "product")
#: how a model's outputs are read (the ``head`` setting; :mod:`.heads`, :mod:`.targets`)
HEADS = ("auto", "softmax", "sigmoid", "binary", "regression")
#: what is differentiated: the entry ("logit") or its probability under the head; "softmax" is
#: the old spelling of "probability" (the ``score`` setting; :mod:`.targets`)
SCORES = ("logit", "probability", "softmax")
#: how a detection run draws its maps (the ``detection_maps`` setting)
DETECTION_MAPS = ("each", "combined")
#: every method's name in the order `camcli methods` lists them; the registry (:mod:`.methods`) must
#: match it (a test says so): the settings are checked against it before torch is imported
METHOD_NAMES = ("cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam", "scorecam",
                "eigencam", "eigengradcam", "ablationcam", "fem", "kpcacam", "randomcam", "sscam", "iscam",
                "smoothgradcam++", "finercam", "shapleycam", "fullgrad", "guidedbackprop", "guidedgradcam", "legrad")
