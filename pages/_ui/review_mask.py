"""Predict & review, review kind "mask" (see pages/_ui/review_generic.py for what every kind shows)."""

from pages._ui.review_generic import review  # noqa: F401
