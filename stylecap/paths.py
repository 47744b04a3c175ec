"""Where stylecap keeps things: the user cache and the files shipped inside the package."""
from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (materialised built-in models, embedding caches).

    ``STYLECAP_CACHE`` overrides it; otherwise ``$XDG_CACHE_HOME/stylecap`` or ``~/.cache/stylecap``.
    """
    if os.environ.get("STYLECAP_CACHE"):
        root = Path(os.environ["STYLECAP_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stylecap"
    root.mkdir(parents=True, exist_ok=True)
    return root


def asset(*parts: str) -> Path:
    """A file or folder shipped in ``stylecap/assets``."""
    return Path(str(resources.files("stylecap.assets").joinpath(*parts)))


def file_digest(path: Path, length: int = 16, pattern: str = "*") -> str:
    """A content hash of a file or of every file in a folder matching ``pattern`` (sorted), for cache keys."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob(pattern) if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]


def text_digest(texts, length: int = 16) -> str:
    """A hash of an ordered list of strings."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:length]
