from .reppoints_v2_head import CornerPoolBranch, RepPointsV2Head, snap_corners

__all__ = ['CornerPoolBranch', 'RepPointsV2Head', 'snap_corners']
