"""Scoring explanations: boxes from maps, ground truth, localisation and faithfulness metrics.

:mod:`.boxes` finds boxes in heatmaps and compares them, :mod:`.truth` reads ground truth
(CSV, Pascal VOC, COCO), :mod:`.faithfulness` reruns the model on masked images, :mod:`.sources`
gathers the maps to score (from a finished run or by explaining images now), and
:mod:`.scoring` averages the figures per method x layer and checks the CI gates.
"""
