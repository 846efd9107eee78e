"""mmdet's and mmseg's visualizers, writing each drawn test prediction as a PNG where asked.

``tools/test.py --show-dir DIR`` swaps the config's ``DetLocalVisualizer`` / ``SegLocalVisualizer``
for :class:`DetPredictionPNGs` / :class:`SegPredictionPNGs`, which :mod:`mmfocal.registry` puts
into mmdet's and mmseg's VISUALIZERS.
"""
import os.path as osp

from mmdet.visualization import DetLocalVisualizer
from mmseg.visualization import SegLocalVisualizer

from .enlarge import MIN_DRAWN_SIZE, enlarge_sample, enlargement

__all__ = ['PredictionPNGs', 'DetPredictionPNGs', 'SegPredictionPNGs']


class PredictionPNGs:
    """A library visualizer (the class it is mixed into) writing each drawn test prediction as a PNG.

    Each goes to ``show_dir`` as ``<image stem>.png``: lossless whatever the input format, and in
    the directory asked for rather than under the work dir. Pictures smaller than ``min_size``
    pixels on their longer side are drawn enlarged by a whole factor (image, ground truth and
    predictions), so that labels and outlines are readable on small pictures (the demo's 128
    pixels: 4x).

    Args:
        name (str): The visualizer's name. Defaults to ``'visualizer'``.
        show_dir (str, optional): Where the PNGs go; None: where the library's visualizer puts
            its pictures. Defaults to None.
        min_size (int): The least longer side to draw. Defaults to :data:`MIN_DRAWN_SIZE`.
        **kwargs: The library visualizer's other arguments.
    """

    def __init__(self, name='visualizer', show_dir=None, min_size=MIN_DRAWN_SIZE, **kwargs):
        super().__init__(name=name, **kwargs)
        self.show_dir = show_dir
        self.min_size = min_size

    def add_datasample(self, name, image, data_sample=None, *args, out_file=None, **kwargs):
        """The library visualizer's ``add_datasample``, enlarged, to ``show_dir/<stem>.png``.

        Args:
            name (str): The image's name; mmseg's hook passes ``'<mode>_<image file name>'``.
            image (np.ndarray): The image, shape (H, W, 3).
            data_sample (DetDataSample | SegDataSample, optional): Its ground truth and prediction,
                enlarged with the image. Defaults to None.
            *args: The library visualizer's other positional arguments.
            out_file (str, optional): mmdet's hook passes the image path here; the PNG is named
                after its stem. Defaults to None.
            **kwargs: The library visualizer's other keyword arguments.
        """
        if data_sample is not None:
            image, data_sample = enlarge_sample(image, data_sample, enlargement(image.shape, self.min_size))
        if self.show_dir is not None:
            # mmdet's hook passes the image path as out_file; mmseg's names the window
            # '<mode>_<image file name>' and passes no out_file.
            source = out_file if out_file is not None else name.split('_', 1)[-1]
            stem = osp.splitext(osp.basename(source))[0]
            out_file = osp.join(self.show_dir, stem + '.png')
        return super().add_datasample(name, image, data_sample, *args, out_file=out_file, **kwargs)


class DetPredictionPNGs(PredictionPNGs, DetLocalVisualizer):
    """mmdet's DetLocalVisualizer with :class:`PredictionPNGs`' files and enlargement."""


class SegPredictionPNGs(PredictionPNGs, SegLocalVisualizer):
    """mmseg's SegLocalVisualizer with :class:`PredictionPNGs`' files and enlargement."""
