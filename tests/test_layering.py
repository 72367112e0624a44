"""`core` must import and work without Streamlit (SPEC section 1)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import core

REPO = Path(__file__).resolve().parents[1]


def test_core_never_imports_streamlit():
    modules = [m.name for m in pkgutil.walk_packages(core.__path__, "core.") if "__main__" not in m.name]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m == 'streamlit' or m.startswith('streamlit.')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(modules) >= 3


def test_importing_core_is_cheap():
    code = "import sys, core, core.volume, core.windowing; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _imports(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_families_do_not_import_each_other_and_pages_do_not_import_family_internals():
    families = sorted(p.parent.name for p in (REPO / "core" / "models").glob("*/spec.py"))
    assert "lung_localizer" in families
    for family in families:
        for path in (REPO / "core" / "models" / family).rglob("*.py"):
            others = {m for m in _imports(path) for f in families
                      if f != family and m.startswith(f"core.models.{f}")}
            assert not others, f"{path} imports another family's pipeline: {sorted(others)}"
    # The Annotations page's Prepare button is the one bridge from annotating to the lung family's data.
    allowed = {"core.models.lung_localizer.prepare"}
    for path in [*(REPO / "pages").rglob("*.py"), REPO / "app.py"]:
        internals = {m for m in _imports(path) if m.startswith("core.models.") and m not in allowed}
        assert not internals, f"{path} imports family internals: {sorted(internals)}"


def test_generic_modules_have_no_family_branches():
    """`family == "..."` belongs in the family's folder, nowhere else (STYLE.md)."""
    import re

    pattern = re.compile(r"""family\s*[!=]=\s*["']""")
    for path in [*(REPO / "core").rglob("*.py"), *(REPO / "pages").rglob("*.py")]:
        if "models" in path.relative_to(REPO).parts:
            continue
        assert not pattern.search(path.read_text(encoding="utf-8")), f"{path} branches on a family name"
