"""Slicewise: Streamlit entry point. Navigation and the shared sidebar only; no logic."""

import streamlit as st

st.set_page_config(page_title="Slicewise", page_icon=":material/radiology:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/viewer.py", title="Viewer", icon=":material/visibility:"),
    st.Page("pages/annotate.py", title="Annotate", icon=":material/draw:"),
    st.Page("pages/review.py", title="Annotations", icon=":material/fact_check:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/predict.py", title="Predict & review", icon=":material/insights:"),
]

st.navigation(PAGES).run()
