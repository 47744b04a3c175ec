"""Books: plain text or EPUB, reduced to the story itself (no licence, title page or contents).

A `Book` is read as a stream, once per pass (where the story lies, which names it uses, its
sentences), so no pass holds the whole book's sentences and a plain-text book is never whole in
memory.

An EPUB is a zip file from anywhere: it is read with caps on what it may unpack (a zip bomb is
refused from its declared sizes, before anything is unpacked) and every way it can be broken
becomes a BadBook with the reason, never a traceback."""
from __future__ import annotations

import codecs
import io
import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

_LICENCE_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_LICENCE_END = re.compile(r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_HEADING = re.compile(r"^[ \t]*(?:chapter|book|part|prologue)\b[^\n]{0,60}$", re.M | re.I)
_PROSE = 500  # characters of text after a heading that make it the start of the story
_READ = 1 << 20  # bytes read (or characters handed on) at a time
# The longest novels are a few MB of XHTML; these leave a wide margin and still stop a zip bomb.
MAX_MEMBER_BYTES = 16 << 20  # one file inside an EPUB, unpacked
MAX_BOOK_BYTES = 64 << 20  # everything read from one EPUB, unpacked
_CONTAINER = "META-INF/container.xml"


class BadBook(Exception):
    """A book file that cannot be read (the message says why: damaged, malformed, too large)."""


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


class Book:
    """A book file, or a book's bytes, read as a stream of text as many times as a pass needs.
    Plain text is decoded as `book_text` decodes it (UTF-8, else cp1252, else Latin-1); an EPUB's
    chapters are unpacked once (within the caps above) and held as text."""

    def __init__(self, source: str | Path | bytes):
        self.handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        self._epub: str | None = None
        self._encoding: str | None = None
        self._span: tuple[int, int] | None = None
        self.has_text = False
        if self.handle.read(2) == b"PK":
            self.handle.seek(0)
            try:
                self._epub = _epub_text(self.handle.read())
            finally:
                self.handle.close()

    def close(self) -> None:
        self.handle.close()

    def text(self) -> Iterator[str]:
        """The book's text in pieces; joined, they are `book_text` of the file."""
        if self._epub is not None:
            for start in range(0, len(self._epub), _READ):
                yield self._epub[start:start + _READ]
            return
        if self._encoding is None:
            self._encoding = self._find_encoding()
        yield from self._decoded(self._encoding)

    def _find_encoding(self) -> str:
        for encoding in ("utf-8-sig", "cp1252"):
            try:
                for _ in self._decoded(encoding):
                    pass
                return encoding
            except UnicodeDecodeError:
                continue
        return "latin-1"

    def _decoded(self, encoding: str) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(encoding)()
        self.handle.seek(0)
        while data := self.handle.read(_READ):
            yield decoder.decode(data)
        yield decoder.decode(b"", final=True)

    def span(self) -> tuple[int, int]:
        """Where the story starts and ends, as `story_span` finds it in the whole text."""
        if self._span is None:
            finder, length = _StoryFinder(), 0
            for offset, line in _lines(self.text()):
                finder.feed(offset, line)
                self.has_text = self.has_text or not line.isspace()
                length = offset + len(line)
            self._span = finder.result(length)
        return self._span

    def story(self) -> Iterator[str]:
        """The story's text (from `span()[0]`) in pieces of whole lines, chapter headings blanked
        as `without_headings` blanks them."""
        start, end = self.span()
        pieces, size = [], 0
        for offset, line in _lines(self.text()):
            if offset + len(line) <= start:
                continue
            if offset >= end:
                break
            if offset >= start and _HEADING.match(line.rstrip("\n")):
                line = " " * len(line.rstrip("\n")) + line[len(line.rstrip("\n")):]
            pieces.append(line[max(0, start - offset):end - offset])
            size += len(pieces[-1])
            if size >= _READ:
                yield "".join(pieces)
                pieces, size = [], 0
        if pieces:
            yield "".join(pieces)


def _lines(pieces: Iterator[str]) -> Iterator[tuple[int, str]]:
    """(offset, line) for each line of the text the pieces make, "\n" kept (the last line may lack
    it). Only "\n" ends a line, as only it does for the patterns above."""
    offset, rest = 0, ""
    for piece in pieces:
        rest += piece
        start = 0
        while (newline := rest.find("\n", start)) >= 0:
            yield offset + start, rest[start:newline + 1]
            start = newline + 1
        offset, rest = offset + start, rest[start:]
    if rest:
        yield offset, rest


class _StoryFinder:
    """`story_span` as a single pass over lines: the first licence start marker restarts the
    search; after it, the first end marker ends the story; the story starts at the first heading
    followed by `_PROSE` characters of text before the next heading (or the end)."""

    def __init__(self):
        self.marked = False  # a licence start marker was seen
        self._restart(0)

    def _restart(self, start: int) -> None:
        self.start, self.end, self.story = start, None, None
        self.heading_end = None  # the heading whose prose is being measured
        self.first = self.last = None  # its prose's first and (one past) last non-space character

    def feed(self, offset: int, line: str) -> None:
        content = line.rstrip("\n")
        if not self.marked and (marker := _LICENCE_START.match(content)):
            self.marked = True
            self._restart(offset + marker.end())
        elif self.end is None and _LICENCE_END.match(content):
            self.end = offset
        elif self.end is None and self.story is None and offset >= self.start:
            self._story_line(offset, content)

    def _story_line(self, offset: int, content: str) -> None:
        if _HEADING.match(content):
            self.heading_end, self.first = offset + len(content), None
            return
        if self.heading_end is None or not content.strip():
            return
        if self.first is None:
            self.first = offset + len(content) - len(content.lstrip())
        self.last = offset + len(content.rstrip())
        if self.last - self.first >= _PROSE:
            self.story = self.heading_end

    def result(self, length: int) -> tuple[int, int]:
        """(start, end) of the story in a text of `length` characters."""
        return (self.story if self.story is not None else self.start), (length if self.end is None else self.end)


def _epub_text(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as book:
            chapters = _Epub(book).chapters()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, struct.error, NotImplementedError,
            RuntimeError) as exc:
        # truncated or corrupt archive, bad CRC or offsets, unknown compression, encrypted member
        raise BadBook(f"damaged EPUB ({_first_line(exc)})") from None
    return "\n\n".join(html_text(chapter) for chapter in chapters)


class _Epub:
    """The chapters of an open EPUB in reading order (container.xml → OPF → spine), with every
    unpacked byte counted against the caps."""

    def __init__(self, book: zipfile.ZipFile):
        self.book, self.read_so_far = book, 0

    def chapters(self) -> list[str]:
        container = self._xml(_CONTAINER)
        opf_path = next((e.get("full-path") for e in container.iter() if e.tag.endswith("rootfile")), None)
        if not opf_path:
            raise BadBook(f"damaged EPUB ({_CONTAINER} names no package file)")
        opf = self._xml(opf_path)
        folder = posixpath.dirname(opf_path)
        hrefs = {e.get("id"): e.get("href") for e in opf.iter() if e.tag.endswith("}item") and e.get("href")}
        spine = [_member_path(folder, hrefs[e.get("idref")]) for e in opf.iter()
                 if e.tag.endswith("itemref") and e.get("idref") in hrefs]
        self._check_sizes(spine)  # before unpacking any chapter
        return [self._read(path).decode("utf-8", "replace") for path in spine]

    def _xml(self, path: str) -> ElementTree.Element:
        try:
            return ElementTree.fromstring(self._read(path))
        except ElementTree.ParseError as exc:  # expat also refuses entity-expansion ('billion laughs') bombs
            raise BadBook(f"broken XML in {path} ({exc})") from None

    def _check_sizes(self, paths: list[str]) -> None:
        """Refuse a book from the sizes its zip directory declares, before unpacking it."""
        total = self.read_so_far
        for path in paths:
            total += self._info(path).file_size
            if total > MAX_BOOK_BYTES:
                raise BadBook(f"EPUB unpacks to more than {MAX_BOOK_BYTES:,} bytes (a zip bomb?)")

    def _read(self, path: str) -> bytes:
        """One member, never more than the caps allow: its declared size is checked first, and the
        read itself stops at the cap whatever the declaration said."""
        info = self._info(path)
        if info.file_size > MAX_MEMBER_BYTES:
            raise BadBook(f"{path} unpacks to {info.file_size:,} bytes, more than {MAX_MEMBER_BYTES:,} "
                          "(a zip bomb?)")
        room = min(MAX_MEMBER_BYTES, MAX_BOOK_BYTES - self.read_so_far)
        with self.book.open(info) as member:
            data = member.read(room + 1)
        if len(data) > room:
            raise BadBook(f"EPUB unpacks to more than {MAX_BOOK_BYTES:,} bytes (a zip bomb?)")
        self.read_so_far += len(data)
        return data

    def _info(self, path: str) -> zipfile.ZipInfo:
        try:
            return self.book.getinfo(path)
        except KeyError:
            raise BadBook(f"malformed EPUB ({path} is missing)") from None


def _member_path(folder: str, href: str) -> str:
    """The zip member an OPF href names: relative to the OPF's folder, %-escapes decoded, no anchor."""
    return posixpath.normpath(posixpath.join(folder, unquote(href.split("#", 1)[0])))


def _first_line(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]


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
