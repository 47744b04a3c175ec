"""Style corpora from the web, against a loopback site with a robots.txt, a huge page, a slow page,
a redirect loop and a sitemap."""
from __future__ import annotations

import time

import pytest
from conftest import PageHandler, PageServer, serve_pages

from stylecap.generate import GenerateConfig, SourceOptions, WebSettings, generate, iter_corpus_records

ARTICLE = """<html><head><title>{title}</title></head><body>
<nav><a href="/">Home</a> | <a href="/shop">Subscribe to our newsletter for weekly deals</a></nav>
<article><h1>{title}</h1>{paragraphs}</article>
<footer>Copyright notice and cookie settings for this loopback test site.</footer>
</body></html>"""

PAGES = {
    "/a.html": ARTICLE.format(title="A morning at the harbour", paragraphs="""
<p>The fishing boats came in early, their red hulls shining in the low sun. Gulls circled above the
wooden pier while a man in a yellow coat coiled ropes on the deck.</p>
<p>We thought about the price of fish for a long time. Nobody knew what the season would bring.</p>
<p>A small white dog sat beside the ice buckets, watching every crate that came ashore.</p>"""),
    "/b.html": ARTICLE.format(title="The night market", paragraphs="""
<p>Strings of paper lanterns hung between the stalls, glowing orange over the crowded street.
A woman sold steaming bowls of noodles from a green cart with a striped awning.</p>
<p>It is hard to explain why we keep coming back every year, but we do.</p>"""),
    "/private/secret.html": ARTICLE.format(title="Private", paragraphs="<p>A red door in a white wall.</p>"),
}
SITEMAP = """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{}</urlset>"""
LISTED = ["/a.html", "/b.html", "/private/secret.html", "/huge.html", "/slow.html", "/loop", "/to-a", "/missing.html"]


class Site(PageHandler):
    requests: list[tuple[float, str, str]] = []

    def do_GET(self):
        Site.requests.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
        host = f"http://{self.headers['Host']}"
        if self.path == "/robots.txt":
            return self._send(200, "User-agent: *\nDisallow: /private/\n", "text/plain")
        if self.path == "/sitemap.xml":
            locs = "".join(f"<url><loc>{host}{path}</loc></url>" for path in LISTED)
            return self._send(200, SITEMAP.format(locs), "application/xml")
        if self.path in PAGES:
            return self._send(200, PAGES[self.path], "text/html; charset=utf-8")
        if self.path == "/huge.html":  # no Content-Length: only counting the bytes can stop it
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.close_connection = True
            for _ in range(100):
                self.wfile.write(b"<p>" + b"a very long page " * 60 + b"</p>\n")
            return None
        if self.path == "/slow.html":
            time.sleep(2)
            return self._send(200, PAGES["/a.html"], "text/html")
        if self.path in ("/loop", "/loop2", "/to-a"):
            target = {"/loop": "/loop2", "/loop2": "/loop", "/to-a": "/a.html"}[self.path]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send(404, "not here", "text/plain")


class QuietServer(PageServer):
    def handle_error(self, request, client_address):
        pass  # the client hanging up on the huge and slow pages is the point


@pytest.fixture
def site():
    Site.requests = []
    with serve_pages(Site, QuietServer) as url:
        yield url


def test_web_source_is_polite_and_keeps_visible_sentences(site, tmp_path):
    web = WebSettings(timeout=0.5, max_bytes=20_000, per_host_rate=20.0, concurrency=4)
    summary = generate(GenerateConfig(style="ego-centric", source="web", out=tmp_path, progress=False,
                                      options=SourceOptions(inputs=[f"{site}/sitemap.xml"], web=web)))

    assert summary["inputs"]["failure_reasons"] == {
        "larger than 20,000 bytes": 1, "timed out after 0.5s": 1, "more than 5 redirects": 1}
    # permanent outcomes are skipped, not failed: no run can fetch them
    assert summary["inputs"]["skip_reasons"] == {"disallowed by robots.txt": 1, "HTTP 404": 1}
    assert summary["inputs"]["done"] == 3  # a, b, and the redirect to a
    texts = [r["text"] for r in iter_corpus_records(tmp_path)]
    assert any("red hulls" in t for t in texts) and any("paper lanterns" in t for t in texts)
    assert not any("Subscribe" in t or "Copyright" in t for t in texts)  # main text only
    assert not any("price of fish" in t for t in texts)  # nothing visible in it
    assert summary["dropped"]["exact duplicate"] >= 3  # /to-a repeats /a.html
    assert len(texts) == len(set(texts))
    for record in iter_corpus_records(tmp_path):
        provenance = record["provenance"]
        assert provenance["url"].endswith(("/a.html", "/b.html")) or provenance["final_url"].endswith("/a.html")

    paths = [path for _, path, _ in Site.requests]
    assert "/private/secret.html" not in paths and paths.count("/robots.txt") == 1
    assert all(agent.startswith("stylecap/") for _, _, agent in Site.requests)
    starts = sorted(t for t, _, _ in Site.requests)
    # One host is paced at 20 requests/s (arrival times jitter around the spacing; the span does not).
    assert starts[-1] - starts[0] >= 0.9 * (len(starts) - 1) / 20
