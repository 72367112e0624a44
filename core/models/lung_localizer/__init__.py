"""Lung localizer family (SPEC 5A): spec (no torch), net, data, prepare, train, predict."""
