"""`generate` against hostile or broken inputs: where the API key may go, robots.txt on every
spelling of a URL, EPUBs that are bombs or broken, outcomes no rerun can change, ragged tables and
control characters in what reaches the terminal. Real servers on 127.0.0.1, real files."""
from __future__ import annotations

import json
import logging
import posixpath
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import PageHandler, serve_pages

from stylecap.errors import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_SERVICE, EXIT_USAGE, UsageError
from stylecap.generate import GenerateConfig, LLMSettings, SourceOptions, WebSettings, generate
from stylecap.generate.books import MAX_BOOK_BYTES, MAX_MEMBER_BYTES
from stylecap.generate.loopback import LoopbackLLM

pytestmark = pytest.mark.fault

FIXTURES = Path(__file__).parent / "fixtures" / "generate"
SEEDS = FIXTURES / "seeds.txt"
BOOK = FIXTURES / "book.txt"
MARKER = "sk-planted-3c1e9f0a7d-never-leave"


def _llm_args(out: Path, *extra: str) -> list[str]:
    return ["generate", "--style", "ego-centric", "--input", str(SEEDS), "--out", str(out), "--model",
            "loopback", "--no-progress", "--backoff", "0.01", *extra]


def _sent(server: LoopbackLLM) -> bytes:
    return b"".join(server.received)


def _closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No OpenAI settings from the machine running the tests; caches and the working folder inside
    tmp_path, so a test can search everything a run wrote."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STYLECAP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")


# ----------------------------------------------------------------------------- API key policy


def test_a_planted_key_goes_nowhere_but_openai(tmp_path, clean_env, monkeypatch, capsys, caplog, cli):
    caplog.set_level(logging.DEBUG)  # whatever the libraries log, at any level
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    with LoopbackLLM(faults={2: "badjson", 7: "500"}) as server:
        code = cli(_llm_args(tmp_path / "flag", "--base-url", server.url))
        assert code == EXIT_PARTIAL  # one malformed reply: recorded, logged and reported
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # the second way to name a server
        code = cli(_llm_args(tmp_path / "env"))
        assert code == EXIT_OK
        monkeypatch.delenv("OPENAI_BASE_URL")
        code = cli(_llm_args(tmp_path / "404", "--base-url", server.url + "/nowhere"))
        assert code == EXIT_SERVICE  # an error message that names the server
        wire = _sent(server)
    captured = capsys.readouterr()  # all three runs
    streams = captured.out + captured.err

    assert wire.count(b"POST /v1/chat/completions") > 2 * len(SEEDS.read_text().splitlines())
    assert MARKER.encode() not in wire
    assert b"bearer no-key" in wire.lower()  # a placeholder, so the client never reaches for the env
    assert MARKER not in streams + caplog.text
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "manifest.json" for path in written)
    assert not [path for path in written if MARKER.encode() in path.read_bytes()]


def test_a_key_goes_where_the_user_sends_it(tmp_path, clean_env, monkeypatch, capsys, cli):
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    monkeypatch.setenv("MY_SERVER_KEY", "server-key-from-env")
    with LoopbackLLM() as server:
        args = _llm_args(tmp_path / "a", "--base-url", server.url, "--limit", "2", "--api-key-env", "MY_SERVER_KEY")
        assert cli(args) == EXIT_OK
        assert b"bearer server-key-from-env" in _sent(server).lower()
        server.received.clear()
        args = _llm_args(tmp_path / "b", "--base-url", server.url, "--limit", "2", "--api-key", "typed-key")
        assert cli(args) == EXIT_OK
        assert b"bearer typed-key" in _sent(server).lower() and MARKER.encode() not in _sent(server)
    capsys.readouterr()  # what the runs above printed
    code = cli(_llm_args(tmp_path / "c", "--base-url", server.url, "--api-key-env", "UNSET_KEY_VAR"))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "UNSET_KEY_VAR" in err and err.count("\n") == 1


@pytest.mark.parametrize("url, openai", [
    (None, True), ("https://api.openai.com/v1", True), ("https://API.openai.com:443/v1", True),
    ("http://api.openai.com/v1", False),  # plain http: the key would cross the network in clear
    ("https://api.openai.com.example.org/v1", False), ("https://api.openai.com:8443/v1", False),
    ("https://proxy.example/api.openai.com/v1", False), ("http://127.0.0.1:8000/v1", False)])
def test_openai_api_key_is_sent_to_openai_only(url, openai, clean_env, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    base_url, key = LLMSettings(base_url=url).endpoint()
    assert (key == MARKER) is openai and (key is None) is not openai
    assert base_url == (url or "https://api.openai.com/v1")


def test_llm_lookup_order(tmp_path, clean_env, monkeypatch, capsys, cli):
    code = cli(_llm_args(tmp_path / "none"))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and err.count("\n") == 1  # one line naming every way out
    for way in ("--base-url", "OPENAI_BASE_URL", "OPENAI_API_KEY", "books", "web", "reviews"):
        assert way in err

    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{_closed_port()}/v1")
    with LoopbackLLM() as server:  # --base-url comes before $OPENAI_BASE_URL
        assert cli(_llm_args(tmp_path / "flag", "--base-url", server.url, "--limit", "2")) == EXIT_OK
        assert server.requests == 2
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # ... which comes before OpenAI itself
        monkeypatch.setenv("OPENAI_API_KEY", MARKER)
        assert cli(_llm_args(tmp_path / "env", "--limit", "2")) == EXIT_OK
        assert server.requests == 4
    with pytest.raises(UsageError, match="not an http"):
        LLMSettings(base_url="localhost:8000").endpoint()


def test_a_keyless_server_that_wants_a_key_says_how_to_give_one(tmp_path, clean_env, monkeypatch, capsys, cli):
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    with LoopbackLLM(faults={n: "401" for n in range(1, 50)}) as server:
        code = cli(_llm_args(tmp_path, "--base-url", server.url))
    err = capsys.readouterr().err
    assert code == EXIT_SERVICE and "--api-key-env" in err and err.count("\n") == 1
    assert MARKER not in err


# ----------------------------------------------------------------------------- a dead LLM server


@pytest.mark.parametrize("limit", [1, 30])
def test_a_dead_llm_server_exits_5_whatever_the_input_count(limit, tmp_path, clean_env, capsys, cli):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(f"A red kite number {i} over the harbour." for i in range(limit)))
    args = ["generate", "--style", "ego-centric", "--input", str(seeds), "--out", str(tmp_path / "out"),
            "--base-url", f"http://127.0.0.1:{_closed_port()}/v1", "--model", "loopback", "--no-progress",
            "--backoff", "0.01", "--max-attempts", "3"]
    code = cli(args)
    err = capsys.readouterr().err
    assert code == EXIT_SERVICE, err
    assert err.count("\n") == 1 and "not answering" in err and "Traceback" not in err
    manifest = tmp_path / "out" / "manifest.json"  # what was done is saved, and nothing is marked failed
    assert json.loads(manifest.read_text())["inputs"]["failed"] == 0


# ----------------------------------------------------------------------------- robots.txt on normal URLs


class LenientSite(PageHandler):
    """A site that, like many real servers, decodes every escape and resolves dot segments before
    routing: /public/..%2Fprivate/x is /private/x to it."""

    served: list[str] = []  # resolved paths of pages served

    def do_GET(self):
        raw_path, _, _ = self.path.partition("?")
        path = posixpath.normpath("/" + unquote(raw_path).lstrip("/"))
        if path == "/robots.txt":
            return self._send(200, "User-agent: *\nDisallow: /private/\n", "text/plain")
        LenientSite.served.append(path)
        redirects = {"/go-private": "/public/%2e%2e/private/x", "/go-public": "/public/page.html"}
        if path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path.startswith("/private/") or path == "/public/page.html":
            words = "secret" if path.startswith("/private/") else "public"
            return self._send(200, f"<html><body><article><p>A red {words} lamp stood on the wooden "
                                   f"table by the window.</p></article></body></html>", "text/html")
        if path == "/gone.html":
            return self._send(410, "gone", "text/plain")
        if path == "/broken.html":
            return self._send(500, "oops", "text/plain")
        return self._send(404, "not here", "text/plain")


@pytest.fixture
def lenient_site():
    LenientSite.served = []
    with serve_pages(LenientSite) as url:
        yield url


def _web(out: Path, urls: list[str]) -> dict:
    web = WebSettings(timeout=5, per_host_rate=100.0, concurrency=2)
    return generate(GenerateConfig(style="ego-centric", source="web", out=out, progress=False,
                                   options=SourceOptions(inputs=urls, web=web)))


def test_robots_txt_is_checked_on_the_normal_form_of_every_hop(lenient_site, tmp_path):
    site = lenient_site
    upper = site.replace("http://", "HTTP://")
    forbidden = [f"{site}/public/../private/x", f"{site}/public/%2e%2E/private/y", f"{site}/%70rivate/z",
                 f"{site}/public/..%2Fprivate/w", f"{upper}/public/./../private/v",
                 f"{site}/go-private"]  # a redirect into /private/ is not followed either
    summary = _web(tmp_path, [*forbidden, f"{site}/go-public", f"{site}/missing.html", f"{site}/gone.html"])

    assert not [path for path in LenientSite.served if path.startswith("/private")]
    assert summary["inputs"]["skip_reasons"] == {"disallowed by robots.txt": 6, "HTTP 404": 1, "HTTP 410": 1}
    assert summary["inputs"]["done"] == 1 and summary["inputs"]["failed"] == 0 and summary["records"] == 1

    served = list(LenientSite.served)  # permanent outcomes are final: a rerun asks for none of them
    again = _web(tmp_path, [*forbidden, f"{site}/go-public", f"{site}/missing.html", f"{site}/gone.html"])
    assert LenientSite.served == served and again["this_run"]["inputs"] == 0


def test_only_what_a_rerun_can_fix_exits_6(lenient_site, tmp_path, capsys, cli):
    base = ["generate", "--style", "ego-centric", "--source", "web", "--out", str(tmp_path / "a"),
            "--no-progress", "--per-host-rate", "100"]
    code = cli([*base, "--input", f"{lenient_site}/missing.html", "--input",
                f"{lenient_site}/public/../private/x", "--input", f"{lenient_site}/go-public"])
    err = capsys.readouterr().err
    assert code == EXIT_OK and "skipped: HTTP 404" in err and "skipped: disallowed by robots.txt" in err
    code = cli([*base, "--input", f"{lenient_site}/broken.html"])
    err = capsys.readouterr().err
    assert code == EXIT_PARTIAL and "failed: HTTP 500" in err  # a server error may pass: run again


# ----------------------------------------------------------------------------- EPUB safety


def _epub(path: Path, *, container: str | None = None, opf: str | None = None, chapters=None,
          drop: tuple[str, ...] = ()) -> Path:
    chapters = ["<html><body><p>Captain Mirela Voss stood at the bow in a grey coat.</p></body></html>"] \
        if chapters is None else chapters
    container = container if container is not None else (
        '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        '<rootfile full-path="OEBPS/content.opf"/></rootfiles></container>')
    items = "".join(f'<item id="c{i}" href="c{i}.xhtml"/>' for i in range(len(chapters)))
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    opf = opf if opf is not None else (f'<package xmlns="http://www.idpf.org/2007/opf"><manifest>{items}'
                                       f'</manifest><spine>{spine}</spine></package>')
    files = {"mimetype": "application/epub+zip", "META-INF/container.xml": container,
             "OEBPS/content.opf": opf, **{f"OEBPS/c{i}.xhtml": c for i, c in enumerate(chapters)}}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        for name, text in files.items():
            if name not in drop:
                book.writestr(name, text)
    return path


def _zip_bomb(path: Path, members: int, member_bytes: int) -> Path:
    """An EPUB whose chapters are runs of zeros: small on disk, huge unpacked. Written in chunks,
    so building it needs no more memory than reading it safely does."""
    _epub(path, chapters=["x"] * members, drop=tuple(f"OEBPS/c{i}.xhtml" for i in range(members)))
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as book:
        for i in range(members):
            with book.open(f"OEBPS/c{i}.xhtml", "w", force_zip64=True) as member:
                for _ in range(member_bytes // len(chunk)):
                    member.write(chunk)
    return path


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";" if i > 1 else "&lol;") * 10}">'
                            for i in range(1, 10))
                  + ']><package>&lol9;</package>')


def test_bad_epubs_are_each_one_skipped_input_with_its_reason(tmp_path, capsys, cli):
    good = _epub(tmp_path / "good.epub")
    whole = good.read_bytes()
    (tmp_path / "truncated.epub").write_bytes(whole[:len(whole) // 2])
    books = {
        "no-container.epub": _epub(tmp_path / "no-container.epub", drop=("META-INF/container.xml",)),
        "truncated.epub": tmp_path / "truncated.epub",
        "broken-xml.epub": _epub(tmp_path / "broken-xml.epub", container="<container><rootfiles>"),
        "no-opf.epub": _epub(tmp_path / "no-opf.epub", drop=("OEBPS/content.opf",)),
        "no-rootfile.epub": _epub(tmp_path / "no-rootfile.epub", container="<container/>"),
        "laughs.epub": _epub(tmp_path / "laughs.epub", opf=BILLION_LAUGHS),
        "bomb.epub": _zip_bomb(tmp_path / "bomb.epub", members=1, member_bytes=MAX_MEMBER_BYTES + (1 << 20)),
        "wide-bomb.epub": _zip_bomb(tmp_path / "wide-bomb.epub", members=MAX_BOOK_BYTES // MAX_MEMBER_BYTES + 1,
                                    member_bytes=MAX_MEMBER_BYTES),
        "empty-chapters.epub": _epub(tmp_path / "empty-chapters.epub", chapters=["<html><body> </body></html>"]),
    }
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    books["empty.txt"] = tmp_path / "empty.txt"
    assert max(path.stat().st_size for path in books.values()) < 200_000  # bombs: small on disk

    out = tmp_path / "corpus"
    args = ["generate", "--style", "character-based", "--source", "books", "--out", str(out), "--no-progress",
            "--characters", "Mirela Voss"]
    for path in [good, *books.values()]:
        args += ["--input", str(path)]
    code = cli(args)
    err = capsys.readouterr().err
    assert code == EXIT_OK and "Traceback" not in err  # nothing a rerun could fix: not exit 6

    journal = [json.loads(line) for line in (out / "raw" / "inputs.ndjson").read_text().splitlines()]
    reasons = {Path(entry["key"].removeprefix("book:")).name: entry.get("reason") for entry in journal}
    assert {entry["status"] for entry in journal if entry["key"] != f"book:{good}"} == {"skipped"}
    expected = {
        "no-container.epub": "malformed EPUB (META-INF/container.xml is missing)",
        "truncated.epub": "damaged EPUB (File is not a zip file)",
        "broken-xml.epub": "broken XML in META-INF/container.xml",
        "no-opf.epub": "malformed EPUB (OEBPS/content.opf is missing)",
        "no-rootfile.epub": "names no package file",
        "laughs.epub": "broken XML in OEBPS/content.opf",
        "bomb.epub": f"OEBPS/c0.xhtml unpacks to {MAX_MEMBER_BYTES + (1 << 20):,} bytes",  # its declared size
        "wide-bomb.epub": f"EPUB unpacks to more than {MAX_BOOK_BYTES:,} bytes",
        "empty-chapters.epub": "empty book", "empty.txt": "empty book"}
    for name, reason in expected.items():
        assert reason in reasons[name], (name, reasons[name])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["skipped"] == len(books) and manifest["inputs"]["done"] == 1
    assert manifest["records"] >= 1  # the good book still counts


# ----------------------------------------------------------------------------- ragged tables


def test_a_ragged_csv_is_one_line_naming_the_line_and_the_file(tmp_path):
    table = tmp_path / "reviews.csv"
    table.write_text("product,stars,review\nlamp,5,A brass lamp.\nchair,4,Oak.\nsofa,3,too,many,fields\n")
    result = subprocess.run(
        [sys.executable, "-m", "stylecap", "generate", "--style", "reviews", "--input", str(table),
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_INPUT
    assert result.stderr.count("\n") == 1, result.stderr  # no datasets log line before ours
    assert "line 4 has 5 fields, expected 3" in result.stderr and "reviews.csv" in result.stderr


@pytest.mark.parametrize("name, content, cause", [
    ("reviews.tsv", "review\tstars\nA red lamp.\t5\nA bad\trow\there\n", "line 3 has 3 fields, expected 2"),
    ("reviews.jsonl", '{"review": "A red lamp."}\n{"review": "cut off\n', "line 2 is not valid JSON"),
    ("reviews.csv", b"review\n\xff\xfe a red lamp\n", "not UTF-8 text (byte 0xff at offset 7)"),
])
def test_other_broken_tables_name_their_cause(name, content, cause, tmp_path, capsys, cli):
    table = tmp_path / name
    table.write_bytes(content if isinstance(content, bytes) else content.encode())
    code = cli(["generate", "--style", "reviews", "--input", str(table), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and cause in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- control characters


def test_control_characters_in_paths_never_reach_the_terminal(tmp_path, monkeypatch, capsys, cli):
    missing = tmp_path / "seeds\x1b[2J\x1b]0;owned\x07.txt"
    code = cli(["generate", "--style", "reviews", "--input", str(missing), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and "\x1b" not in err and "\x07" not in err
    assert "seeds\\x1b[2J\\x1b]0;owned\\x07.txt" in err

    monkeypatch.chdir(tmp_path)  # a short path: the summary table does not wrap it
    out = "corpus\x1b[31m[/]red"  # also not read as Rich markup
    code = cli(["generate", "--style", "reviews", "--input", str(FIXTURES / "reviews.csv"),
                "--out", out, "--no-progress"])
    err = capsys.readouterr().err
    assert code == EXIT_OK and "\x1b" not in err and "corpus\\x1b[31m[/]red" in err


def test_control_characters_in_urls_never_reach_the_terminal(tmp_path, lenient_site, capsys, cli):
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{lenient_site}/go-public\nftp://files.example/\x1b[31mred\n")
    code = cli(["generate", "--style", "ego-centric", "--source", "web", "--input", str(urls),
                "--out", str(tmp_path / "o"), "--no-progress", "--per-host-rate", "100"])
    err = capsys.readouterr().err
    assert code == EXIT_OK and "\x1b" not in err  # a URL no run can fetch: skipped, not failed
    assert "\\x1b[31mred" in err and "skipped: not an http(s) URL" in err
