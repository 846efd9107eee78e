"""Pictures: the focal attention map of one query, learning curves, and small test pictures drawn
enlarged by mmdet's and mmseg's visualizers (``prediction_pngs``: the visualizers that write
``tools/test.py --show-dir``'s PNGs, registered by :mod:`mmfocal.registry`). matplotlib is imported
when drawing, not here."""
