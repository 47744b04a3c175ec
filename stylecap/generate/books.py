"""Books: plain text or EPUB, reduced to the story itself (no licence, title page or contents)."""
from __future__ import annotations

import io
import posixpath
import re
import zipfile
from html.parser import HTMLParser
from xml.etree import ElementTree

_LICENCE_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_LICENCE_END = re.compile(r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_HEADING = re.compile(r"^[ \t]*(?:chapter|book|part|prologue)\b[^\n]{0,60}$", re.M | re.I)
_PROSE = 500  # characters of text after a heading that make it the start of the story


def book_text(data: bytes) -> str:
    """The text of a book file: EPUB chapters in reading order, or decoded plain text."""
    if data[:2] == b"PK":
        return _epub_text(data)
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def story_span(text: str) -> tuple[int, int]:
    """Where the story starts and ends in `text`: inside Project Gutenberg's licence markers, and
    after the front matter. A table of contents is a run of headings with nothing between them, so
    the story starts at the first heading followed by real prose."""
    start = m.end() if (m := _LICENCE_START.search(text)) else 0
    end = m.start() if (m := _LICENCE_END.search(text, start)) else len(text)
    for heading in _HEADING.finditer(text, start, end):
        following = _HEADING.search(text, heading.end(), end)
        if len(text[heading.end():following.start() if following else end].strip()) >= _PROSE:
            return heading.end(), end
    return start, end


def without_headings(text: str) -> str:
    """`text` with chapter headings blanked out (same length, so offsets still point into it)."""
    return _HEADING.sub(lambda m: " " * len(m.group()), text)


def _epub_text(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        container = ElementTree.fromstring(book.read("META-INF/container.xml"))
        opf_path = next(e.get("full-path") for e in container.iter() if e.tag.endswith("rootfile"))
        opf = ElementTree.fromstring(book.read(opf_path))
        hrefs = {e.get("id"): e.get("href") for e in opf.iter() if e.tag.endswith("}item")}
        order = [e.get("idref") for e in opf.iter() if e.tag.endswith("itemref")]
        folder = posixpath.dirname(opf_path)
        chapters = [book.read(posixpath.join(folder, hrefs[i])).decode("utf-8", "replace")
                    for i in order if i in hrefs]
    return "\n\n".join(html_text(chapter) for chapter in chapters)


def html_text(html: str) -> str:
    """Visible text of an HTML document, a blank line after each block element."""
    parser = _TextParser()
    parser.feed(html)
    return "".join(parser.parts)


class _TextParser(HTMLParser):
    _BLOCKS = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "section", "blockquote"}
    _HIDDEN = {"script", "style", "head", "title"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)
