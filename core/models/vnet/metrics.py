"""Per-case segmentation metrics for the vnet family (generic; they live in core.mask_review)."""

from core.mask_review import (  # noqa: F401
    DISTANCES,
    OVERLAP,
    case_metrics,
    hausdorff_mm,
    overlap_counts,
    overlap_from_counts,
    summarise,
    worst_slice,
)
