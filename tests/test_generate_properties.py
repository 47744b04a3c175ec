"""Properties that must hold for any input, checked on many generated ones (hypothesis): the URL
normaliser that robots.txt checks depend on, the text normalisers every source uses, and the EPUB
reader on damaged files."""
from __future__ import annotations

import io
import unicodedata
import zipfile
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from stylecap.errors import printable
from stylecap.generate.books import BadBook, book_text
from stylecap.generate.llm import ItemSkipped
from stylecap.generate.text import normalize, split_sentences, words
from stylecap.generate.web import normalize_url

pytestmark = pytest.mark.fault
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- URLs

_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_HOST = st.one_of(st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
                  st.tuples(*[st.integers(0, 255)] * 4).map(lambda parts: ".".join(map(str, parts))))
# Segments chosen to hit every rule: dot segments plain and escaped, escaped unreserved and
# reserved characters, non-ASCII, spaces, empty segments, a literal percent.
_SEGMENT = st.one_of(
    st.sampled_from([".", "..", "%2e", "%2E", "%2e%2E", ".%2e", "%2e.", "..%2F", "%2F", "a", "B", "%41",
                     "%7e", "~x", "caf\u00e9", "x y", "", "%25", "%252e", "a;b=c", "@", ":"]),
    st.text(st.characters(codec="utf-8", exclude_characters="/?#"), max_size=6))
_PATH = st.lists(_SEGMENT, max_size=8).map(lambda segments: "/" + "/".join(segments))
_QUERY = st.one_of(st.just(""), st.text(st.characters(codec="utf-8", exclude_characters="#"), max_size=8)
                   .map(lambda q: "?" + q))


@st.composite
def _urls(draw) -> tuple[str, str, int | None]:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https"]))
    host = draw(_HOST).swapcase() if draw(st.booleans()) else draw(_HOST)
    port = draw(st.one_of(st.none(), st.integers(1, 65535), st.sampled_from([80, 443])))
    fragment = draw(st.one_of(st.just(""), st.text(max_size=5).map(lambda f: "#" + f)))
    netloc = host + (f":{port}" if port is not None else "")
    return f"{scheme}://{netloc}{draw(_PATH)}{draw(_QUERY)}{fragment}", host, port


def _normal(url: str) -> str | None:
    try:
        return normalize_url(url)
    except ItemSkipped:
        return None


@PROPERTY
@given(_urls())
@example(("http://h.example/public/../private/x", "h.example", None))
@example(("HTTP://H.example:80/a/%2e%2E/b", "H.example", 80))
def test_url_normal_form(case):
    url, host, port = case
    normal = _normal(url)
    assume(normal is not None)  # a URL the normaliser refuses is skipped as an input, never fetched
    parts = urlsplit(normal)
    assert normalize_url(normal) == normal  # idempotent: one spelling per page
    assert parts.hostname == host.lower()  # the host is never changed, so robots.txt is the host's
    default = {"http": 80, "https": 443}[parts.scheme]
    assert parts.port == (None if port == default else port)
    segments = parts.path.split("/")
    assert not [s for s in segments if unquote(s) in (".", "..")]  # no dot segment, however spelled
    assert "#" not in normal  # the fragment is never sent, so never checked either
    assert parts.scheme in ("http", "https") and not any(c.isspace() for c in normal)


@PROPERTY
@given(st.text(max_size=40))
def test_url_normaliser_never_crashes_and_keeps_the_host(tail):
    normal = _normal("http://example.org/" + tail)
    if normal is not None:
        assert urlsplit(normal).hostname == "example.org" and normalize_url(normal) == normal


@PROPERTY
@given(st.text(max_size=30))
def test_any_url_is_normalised_or_skipped(anything):
    for url in (anything, "http://" + anything, "https://" + anything):
        normal = _normal(url)  # ItemSkipped, with its reason, is the only way to fail
        if normal is not None:
            assert normalize_url(normal) == normal


# ----------------------------------------------------------------------------- text


@PROPERTY
@given(st.text())
@example("\u0130stanbul don't 'quoted' x'y'z")
def test_text_normalisers_are_idempotent_and_total(text):
    once = normalize(text)
    assert normalize(once) == once
    assert words(once) == words(text)
    shown = printable(text)
    assert printable(shown) == shown
    assert not [c for c in shown if unicodedata.category(c) == "Cc"]


@PROPERTY
@given(st.text(alphabet=st.sampled_from("Ab .!?\n\"'\u201c)(Mr Dr 1\u00e9\u3002"), max_size=200) | st.text())
def test_sentences_point_into_the_text(text):
    for offset, sentence in split_sentences(text):
        assert sentence and sentence == " ".join(sentence.split())  # trimmed, spaces collapsed
        assert text[offset] == sentence[0]
        assert " ".join(text[offset:].split()).startswith(sentence)


# ----------------------------------------------------------------------------- EPUB


def _small_epub() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("mimetype", "application/epub+zip")
        book.writestr("META-INF/container.xml",
                      '<container><rootfiles><rootfile full-path="OEBPS/content.opf"/></rootfiles></container>')
        book.writestr("OEBPS/content.opf", '<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
                      '<item id="a" href="a.xhtml"/></manifest><spine><itemref idref="a"/></spine></package>')
        book.writestr("OEBPS/a.xhtml", "<html><body><p>" + "A red kite over the harbour. " * 40 + "</p></body></html>")
    return buffer.getvalue()


EPUB = _small_epub()


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_a_damaged_epub_is_a_bad_book_never_a_crash(data):
    damaged = bytearray(EPUB)
    how = data.draw(st.sampled_from(["cut", "flip", "insert"]))
    at = data.draw(st.integers(2, len(EPUB) - 1))
    if how == "cut":
        damaged = damaged[:at]
    elif how == "flip":
        for position in data.draw(st.lists(st.integers(2, len(EPUB) - 1), min_size=1, max_size=4)):
            damaged[position] = data.draw(st.integers(0, 255))
    else:
        damaged[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    try:
        assert isinstance(book_text(bytes(damaged)), str)
    except BadBook as exc:
        assert str(exc) and "\n" not in str(exc)
