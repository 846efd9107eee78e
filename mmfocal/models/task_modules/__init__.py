"""What RepPointsV2's head needs beyond mmdet 3.3's task modules: its init-stage assigner and
the corner and foreground targets of its verification branches."""
from .assigners import CornerHeatmapAssigner, CornerTargets, PointAssignerV2, gaussian_radius
from .foreground_targets import foreground_targets

__all__ = ['CornerHeatmapAssigner', 'CornerTargets', 'PointAssignerV2', 'foreground_targets', 'gaussian_radius']
