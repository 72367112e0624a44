"""Slicewise core: all logic of the workbench, importable without Streamlit.

Submodules are imported on demand; importing `core` itself is cheap (no torch).
"""

__version__ = "0.1.0"
