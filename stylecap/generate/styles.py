"""Styles are data: ``corpora/<name>.toml`` (description, default source, filters) plus a prompt
template ``prompts/<file>``. A template holding ``{seed}`` rewrites seed captions; one holding
``{subject}`` writes freely about each subject (a character, a product, a place)."""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from importlib import resources
from pathlib import Path

from stylecap.errors import InputError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SOURCES = ("llm", "books", "web", "reviews")


@dataclasses.dataclass(frozen=True)
class Filters:
    """What a sentence must be to enter a corpus. Style files override any of these."""

    min_words: int = 4
    max_words: int = 50
    language: str | None = "en"  # None skips the language check
    visual: bool = True  # books, web, reviews: keep only sentences that describe something visible
    characters: bool = False  # books, web: keep sentences that mention a character
    near_duplicate: float = 0.7  # word-set similarity at or above which a later record is dropped
    # The paper's filter of overused n-grams (every 4- to 9-gram seen at least 50 times adds
    # count / 800 to a record's chance of being dropped), made scale-free: counts are read as shares
    # of the corpus rescaled to `ngram_reference_records` records, so a corpus of that size is
    # filtered as the paper's rule filters it, and larger or smaller ones alike (see filters.py).
    ngram_sizes: tuple[int, int] = (4, 9)
    ngram_min_count: int = 50
    ngram_scale: float = 800.0
    ngram_reference_records: int = 20_000


@dataclasses.dataclass(frozen=True)
class Style:
    name: str
    description: str
    source: str
    template: str
    template_name: str
    filters: Filters

    @property
    def mode(self) -> str:
        """'rewrite' (one request per seed caption) or 'free' (one per subject)."""
        return "rewrite" if "{seed}" in self.template else "free"

    @property
    def prompt_id(self) -> str:
        """Names the template and its exact text, for provenance."""
        digest = hashlib.sha256(self.template.encode()).hexdigest()[:12]
        return f"{self.template_name}@{digest}"

    @property
    def reply_label(self) -> str | None:
        """The label the template ends on ('First person:'), which a model may echo back."""
        last = self.template.strip().splitlines()[-1].strip()
        return last[:-1] if last.endswith(":") else None

    def render(self, text: str) -> str:
        return self.template.replace("{seed}" if self.mode == "rewrite" else "{subject}", text)


def style_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("stylecap.corpora").iterdir()
                  if p.name.endswith(".toml"))


def load_style(name: str, prompt_file: str | Path | None = None) -> Style:
    """Load a shipped style by name (or a style file by path); `prompt_file` replaces its template."""
    path = Path(name)
    spec = path if path.suffix == ".toml" else resources.files("stylecap.corpora") / f"{name}.toml"
    if not spec.is_file():
        raise UsageError(f"unknown style {name!r}", fix=f"choose one of {', '.join(style_names())}"
                         " or give the path of a style .toml file")
    where = str(path) if path.suffix == ".toml" else f"style {name}"
    try:
        data = tomllib.loads(spec.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"style file is not valid TOML: {exc}", where) from None
    template_name, template = _template(data, prompt_file, where)
    if "{seed}" not in template and "{subject}" not in template:
        raise InputError("prompt template has neither {seed} nor {subject}", template_name,
                         "add {seed} to rewrite captions or {subject} to write about subjects")
    source = data.get("source", "llm")
    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}", where, f"use one of {', '.join(SOURCES)}")
    return Style(name=path.stem, description=data.get("description", ""), source=source,
                 template=template, template_name=template_name,
                 filters=_filters(data.get("filters", {}), where))


def _template(data: dict, prompt_file: str | Path | None, where: str) -> tuple[str, str]:
    if prompt_file is not None:
        path = Path(prompt_file)
        if not path.is_file():
            raise InputError("prompt file not found", str(path))
        return path.name, path.read_text(encoding="utf-8")
    name = data.get("prompt")
    entry = resources.files("stylecap.prompts") / str(name)
    if not name or not entry.is_file():
        raise InputError(f"prompt template {name!r} not found in prompts/", where,
                         "set `prompt` to a file in prompts/ or pass --prompt FILE")
    return name, entry.read_text(encoding="utf-8")


def _filters(table: dict, where: str) -> Filters:
    known = {f.name for f in dataclasses.fields(Filters)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(f"unknown filter setting {unknown[0]!r}", where,
                         f"known settings: {', '.join(sorted(known))}")
    if "ngram_sizes" in table:
        table = {**table, "ngram_sizes": tuple(table["ngram_sizes"])}
    return Filters(**table)
