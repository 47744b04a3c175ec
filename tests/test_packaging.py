"""The package ships what it needs: every subpackage is listed, data files are installed."""
from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, which pyproject supports: the same parser, before it joined the standard library
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "stylecap").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"


def test_style_definitions_and_builtin_models_are_package_data():
    from stylecap.core.lms import builtin_lms
    from stylecap.paths import asset

    assert {"tiny-t5", "tiny-gpt2"} <= set(builtin_lms())
    assert asset("tiny-clip.json").is_file()
    from importlib import resources

    styles = {p.name for p in resources.files("stylecap.corpora").iterdir()}
    assert {"ego-centric.toml", "uplifting.toml", "character-based.toml", "reviews.toml"} <= styles
