"""Style corpora from books (plain text and EPUB) and reviews, and `stylecap corpus stats`."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from stylecap.errors import EXIT_INPUT, InputError
from stylecap.generate import GenerateConfig, SourceOptions, generate, iter_corpus_records

FIXTURES = Path(__file__).parent / "fixtures" / "generate"
BOOK = FIXTURES / "book.txt"


def _books(out: Path, inputs: list[str], characters: list[str] = ()) -> list[dict]:
    generate(GenerateConfig(style="character-based", source="books", out=out, progress=False,
                            options=SourceOptions(inputs=inputs, characters=list(characters))))
    return list(iter_corpus_records(out))


def test_books_keep_visible_sentences_that_name_a_character(tmp_path):
    records = _books(tmp_path, [str(BOOK)])
    texts = [r["text"] for r in records]
    assert any(t.startswith("Captain Mirela Voss stood at the bow") for t in texts)
    assert all(any(name in t for name in ("Voss", "Tobin", "Ilse")) for t in texts)  # found by frequency
    assert not any("Gutenberg" in t or "CHAPTER" in t or "licence" in t for t in texts)  # front and back matter
    assert not any("winters of her childhood" in t for t in texts)  # names no one, shows nothing
    book = BOOK.read_text()
    for record in records:  # provenance points at the sentence in the file
        assert book[record["provenance"]["offset"]:].startswith(record["text"].split()[0])

    only_tobin = _books(tmp_path / "tobin", [str(BOOK)], characters=["Tobin"])
    assert only_tobin and all("Tobin" in r["text"] for r in only_tobin)


def test_epub_books_give_the_same_sentences(tmp_path):
    chapters = BOOK.read_text().split("*** START")[1].split("CHAPTER")[4:]
    epub = tmp_path / "book.epub"
    with zipfile.ZipFile(epub, "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr("META-INF/container.xml", '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                   '<rootfiles><rootfile full-path="OEBPS/content.opf"/></rootfiles></container>')
        items = "".join(f'<item id="c{i}" href="c{i}.xhtml"/>' for i in range(len(chapters)))
        spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
        z.writestr("OEBPS/content.opf", f'<package xmlns="http://www.idpf.org/2007/opf"><manifest>{items}'
                   f'</manifest><spine>{spine}</spine></package>')
        for i, chapter in enumerate(chapters):
            title, body = chapter.split("\n", 1)
            paragraphs = "".join(f"<p>{p}</p>" for p in body.split("\n\n"))
            z.writestr(f"OEBPS/c{i}.xhtml", f"<html><body><h1>CHAPTER{title}</h1>{paragraphs}</body></html>")
    from_text = {r["text"] for r in _books(tmp_path / "txt", [str(BOOK)])}
    from_epub = {r["text"] for r in _books(tmp_path / "epub", [str(epub)])}
    assert from_epub == from_text


def test_reviews_with_a_rating_filter_keep_what_can_be_seen(tmp_path):
    options = SourceOptions(inputs=[str(FIXTURES / "reviews.csv")], min_rating=4)
    summary = generate(GenerateConfig(style="reviews", out=tmp_path, progress=False, options=options))
    texts = [r["text"] for r in iter_corpus_records(tmp_path)]
    assert "The lamp has a brushed brass stem and a round white shade." in texts
    assert not any("dark brown leather" in t for t in texts)  # rated 2
    assert not any("Customer service" in t or "arrived quickly" in t for t in texts)  # nothing visible
    assert summary["this_run"]["rejected"] == {"not visual": 2, "too short": 2}
    record = next(iter_corpus_records(tmp_path))
    assert set(record["provenance"]) >= {"file", "row", "offset"}


def test_review_column_errors_are_one_clear_line(tmp_path, capsys, cli):
    options = SourceOptions(inputs=[str(FIXTURES / "reviews.csv")], text_column="body")
    with pytest.raises(InputError, match="column 'body' not found.*columns are: product, stars, review"):
        generate(GenerateConfig(style="reviews", out=tmp_path, progress=False, options=options))
    code = cli(["generate", "--style", "reviews", "--input", str(tmp_path / "missing.csv"), "--out", str(tmp_path)])
    assert code == EXIT_INPUT
    assert capsys.readouterr().err.count("\n") == 1


def test_corpus_stats(tmp_path, capsys, cli):
    generate(GenerateConfig(style="character-based", source="books", out=tmp_path, progress=False,
                            options=SourceOptions(inputs=[str(BOOK)])))
    assert cli(["corpus", "stats", str(tmp_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == len(list(iter_corpus_records(tmp_path))) > 5
    assert stats["sources"] == {"books": stats["records"]} and stats["duplicate_rate"] == 0.0
    assert stats["words"]["min"] >= 5 and stats["top_ngrams"]["2-grams"]
    assert stats["manifest"]["inputs"]["done"] == 1
