import streamlit as st

st.title("Slicewise")
