"""Predict & review, review kind "volume_classes" (starts from review_generic)."""

from pages._ui.review_generic import review  # noqa: F401
