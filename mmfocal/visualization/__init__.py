"""Pictures: the focal attention map of one query, learning curves, and small test pictures drawn
enlarged for mmdet's and mmseg's visualizers. matplotlib is imported when drawing, not here."""
