"""The seams of the layout, enforced: the core knows nothing of the app, pages know nothing of tensors,
and docs/architecture.md names every module of the core and the app."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "feature_lens_core"
# What a page may not import: tensors and the core's internals belong behind the public API.
PAGE_BANS = ("torch", "feature_lens_core.methods", "feature_lens_core.hooks", "feature_lens_core.exclusive")

pytestmark = pytest.mark.unit


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, as dotted names (`from a import b` gives a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _core_modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if "toy" not in p.parts and p.name != "__init__.py")


def test_importing_the_core_loads_neither_streamlit_nor_altair() -> None:
    probe = "import sys, feature_lens_core; print(sorted({'streamlit', 'altair'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_no_core_module_imports_the_app_streamlit_or_altair() -> None:
    for path in _core_modules():
        banned = {m for m in _imports(path) if m.split(".")[0] in {"streamlit", "altair", "feature_lens_app"}}
        assert not banned, f"{path.relative_to(ROOT)} imports {sorted(banned)}"


def test_pages_use_only_the_public_core() -> None:
    for path in [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        banned = {m for m in _imports(path) if m.startswith(PAGE_BANS)}
        assert not banned, f"{path.relative_to(ROOT)} imports {sorted(banned)}"


def test_the_architecture_page_names_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w/]+\.py)`", text))
    modules = [p.relative_to(ROOT).as_posix() for p in _core_modules()]
    modules += [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "feature_lens_app").glob("*.py"))]
    missing = [m for m in modules if m not in named and not m.endswith("__init__.py")]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_the_lazy_package_exports_exactly_its_public_names() -> None:
    """`__all__`, the lazy table and the names themselves agree: each public name resolves to an object of the
    module the table names, and `attribution_graph` stays the function once its submodule is imported."""
    import feature_lens_core as flc
    import feature_lens_core.attribution_graph  # the import that would shadow the function

    assert sorted(flc.__all__) == sorted(flc._PUBLIC)
    for name, module in flc._PUBLIC.items():
        assert getattr(flc, name) is getattr(sys.modules[module], name), name
    assert callable(flc.attribution_graph) and not isinstance(flc.attribution_graph, type(sys))
