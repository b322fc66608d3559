"""Everything written into an output folder.

:mod:`.rows` is the typed record of one ``predictions.csv`` row and :mod:`.csvfile` reads and
writes those files; :mod:`.folder` decides whether a folder may be written and locks it;
:mod:`.paths` names every file inside it and writes files atomically; :mod:`.image_writer`
turns one explained image into its overlay, heatmap and panel files; :mod:`.render`,
:mod:`.pngfile` and :mod:`.figures` make the pictures; :mod:`.pictures` draws a finished run's gallery
(:mod:`.gallery`) and contact sheets; :mod:`.ndjson` is ``--json``'s record per image.
"""
