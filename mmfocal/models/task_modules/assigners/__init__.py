from .corner_heatmap_assigner import CornerHeatmapAssigner, CornerTargets, gaussian_radius
from .point_assigner_v2 import PointAssignerV2

__all__ = ['CornerHeatmapAssigner', 'CornerTargets', 'PointAssignerV2', 'gaussian_radius']
