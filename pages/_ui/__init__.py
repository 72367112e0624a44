"""Streamlit-side helpers shared by pages: the data root in session state, cached loaders,
the client-side slice viewer component and the overlay hooks. UI glue only; decisions live in core."""
