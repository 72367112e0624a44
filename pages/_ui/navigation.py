"""Keep every page inside app.py's st.navigation, also when the first visit is a deep link.

A fresh Streamlit server that finds a `pages/` folder next to the main script treats the
app as an old-style multipage app until `st.navigation` has run once; a first request for
`/annotate` then runs that page alone (file names in the sidebar, no page config). A page
that finds itself run that way switches the server to navigation mode and reruns, so that
app.py runs and routes the same URL to the same page.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def ensure_app_navigation() -> None:
    """Call first in every page: reruns through app.py when the page was run on its own."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
