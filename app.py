"""Slicewise: Streamlit entry point. Navigation, the shared sidebar and the page error guard; no logic.

The favicon is an emoji (an inline SVG): a `:material/...:` *page* icon makes the browser fetch
the favicon from a web-font host, and the app makes no outbound request. The navigation icons are
Material Symbols, a font Streamlit serves itself (emoji render as empty boxes where the machine has
no emoji font); tests/e2e/test_no_outbound.py checks that no request leaves the host.
"""

import logging
import traceback

import streamlit as st

from core import settings
from core.errors import SlicewiseError


def log_exception(exc: BaseException) -> str:
    """Append the traceback to `<runs root>/logs/app.log`; returns where it went."""
    path = settings.runs_root() / "logs" / "app.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(traceback.format_exception(exc)) + "\n")
        return str(path)
    except OSError:
        logging.getLogger("slicewise").exception("page error")
        return "the server log"


st.set_page_config(page_title="Slicewise", page_icon="🫁", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/viewer.py", title="Viewer", icon=":material/visibility:"),
    st.Page("pages/annotate.py", title="Annotate", icon=":material/edit_square:"),
    st.Page("pages/review.py", title="Annotations", icon=":material/fact_check:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/predict.py", title="Predict & review", icon=":material/insights:"),
]

USER_KEY = "auth_user"


def require_login() -> None:
    """When the server is shared (or SLICEWISE_REQUIRE_LOGIN=1): a login form until a user of
    core.auth's users file logs in; the annotator is then that user, whatever is typed elsewhere."""
    from core import auth

    if not auth.login_required(st.get_option("server.address")):
        return
    user = st.session_state.get(USER_KEY)
    if user:
        st.session_state["annotator"] = user  # before any page's widget: the recorded annotator
        with st.sidebar:
            st.caption(f"Logged in as **{user}**")
            if st.button("Log out", key="auth_logout"):
                for key in (USER_KEY, "annotator"):
                    st.session_state.pop(key, None)
                st.rerun()
        return
    st.title("Slicewise")
    st.write("This server is shared: log in to continue.")
    with st.form("login"):
        name = st.text_input("User", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        try:
            ok = auth.verify(name, password)
        except SlicewiseError:
            ok = False
        if ok:
            st.session_state[USER_KEY] = name.strip()
            st.rerun()
        st.error("Wrong user name or password.", icon="🚫")
    if not auth.load_users():
        st.info("No user yet: the administrator adds one with `python -m core.auth add NAME`.")
    st.stop()


try:
    require_login()
    st.navigation(PAGES).run()
except SlicewiseError as exc:  # what went wrong and which file: one line, no traceback
    log_exception(exc)
    st.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, icon="⚠️")
except Exception as exc:  # noqa: BLE001 - a page must never show a traceback with server paths
    where = log_exception(exc)
    st.error(f"Something went wrong on this page ({type(exc).__name__}). Details are in {where}; "
             "reload the page or choose other data.", icon="⚠️")
