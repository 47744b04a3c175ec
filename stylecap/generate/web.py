"""Fetching pages politely: robots.txt obeyed (on every redirect hop too, on URLs in normal form),
one host paced, a clear user agent, a total time limit and a size cap per page."""
from __future__ import annotations

import asyncio
import dataclasses
import html
import posixpath
import re
from urllib.parse import unquote, urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from stylecap import __version__
from stylecap.generate.limits import Pacer
from stylecap.generate.llm import ItemFailed, ItemSkipped

USER_AGENT = f"stylecap/{__version__} (style corpus builder; obeys robots.txt)"
_ROBOTS_TOKEN = "stylecap"
_GONE = (404, 410)  # the page is not there: asking again will not help


@dataclasses.dataclass
class WebSettings:
    timeout: float = 20.0  # seconds for a whole page, slow trickles included
    max_bytes: int = 5_000_000
    per_host_rate: float = 1.0  # requests per second to any one host
    concurrency: int = 8
    max_redirects: int = 5


@dataclasses.dataclass
class Page:
    url: str  # after redirects
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        charset = re.search(r"charset=([\w-]+)", self.content_type)
        try:
            return self.body.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


class Fetcher:
    def __init__(self, settings: WebSettings):
        import httpx

        self.settings = settings
        self.client = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT}, follow_redirects=False,
            timeout=httpx.Timeout(settings.timeout), limits=httpx.Limits(max_connections=64))
        self._robots: dict[str, tuple[RobotFileParser, str | None]] = {}  # origin -> (rules, why unreadable)
        self._robots_lock = asyncio.Lock()
        self._pacers: dict[str, Pacer] = {}
        self.requests = 0

    async def get(self, url: str) -> Page:
        """The page at `url`, following redirects; ItemFailed (or ItemSkipped, for good) says why not.
        Every hop is put in normal form first, so that the URL robots.txt is checked against is
        the URL fetched."""
        import httpx

        for _ in range(self.settings.max_redirects + 1):
            url = normalize_url(url)
            await self._check_robots(url)
            try:
                status, headers, body = await self._request(url)
            except httpx.HTTPError as exc:
                raise ItemFailed(f"{type(exc).__name__}") from None
            if status in (301, 302, 303, 307, 308) and "location" in headers:
                url = urljoin(url, headers["location"])
                continue
            if status in _GONE:
                raise ItemSkipped(f"HTTP {status}")
            if status != 200:
                raise ItemFailed(f"HTTP {status}")
            return Page(url, headers.get("content-type", ""), body)
        raise ItemFailed(f"more than {self.settings.max_redirects} redirects")

    async def _request(self, url: str) -> tuple[int, dict, bytes]:
        """One GET, once the host's pacer lets it go; the time limit covers the whole download."""
        await self._pacer(url).wait()
        self.requests += 1
        try:
            return await asyncio.wait_for(self._download(url), self.settings.timeout)
        except asyncio.TimeoutError:
            raise ItemFailed(f"timed out after {self.settings.timeout:g}s") from None

    async def _download(self, url: str) -> tuple[int, dict, bytes]:
        async with self.client.stream("GET", url) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            if response.status_code != 200:
                return response.status_code, headers, b""
            declared = int(headers.get("content-length") or 0)
            if declared > self.settings.max_bytes:
                raise ItemFailed(f"larger than {self.settings.max_bytes:,} bytes")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.settings.max_bytes:
                    raise ItemFailed(f"larger than {self.settings.max_bytes:,} bytes")
                chunks.append(chunk)
            return 200, headers, b"".join(chunks)

    def _pacer(self, url: str) -> Pacer:
        host = urlsplit(url).netloc
        return self._pacers.setdefault(host, Pacer(self.settings.per_host_rate))

    async def _check_robots(self, url: str) -> None:
        """Raise unless robots.txt lets us fetch `url` (in normal form). The path is also checked
        as a lenient server may read it, every escape decoded (%2F too) and dot segments then
        resolved, so no spelling of a forbidden path gets through."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        async with self._robots_lock:  # one robots.txt fetch per host, however many pages wait
            if origin not in self._robots:
                self._robots[origin] = await self._fetch_robots(origin)
        rules, unreadable = self._robots[origin]
        if unreadable:
            raise ItemFailed(f"robots.txt could not be read ({unreadable}); run again later")
        lenient = origin + _decoded_path(parts)
        if not (rules.can_fetch(_ROBOTS_TOKEN, url) and rules.can_fetch(_ROBOTS_TOKEN, lenient)):
            raise ItemSkipped("disallowed by robots.txt")

    async def _fetch_robots(self, origin: str) -> tuple[RobotFileParser, str | None]:
        """Parsed robots.txt (RFC 9309) and, when it could not be read, why: a missing one (4xx)
        allows everything, an unreachable one (5xx, no answer) forbids everything until the next
        run."""
        import httpx

        robots, url = RobotFileParser(), origin + "/robots.txt"
        try:
            for _ in range(self.settings.max_redirects):
                status, headers, body = await self._request(url)
                if not (300 <= status < 400 and "location" in headers):
                    break
                url = urljoin(url, headers["location"])
        except (httpx.HTTPError, ItemFailed) as exc:
            return robots, type(exc).__name__ if isinstance(exc, httpx.HTTPError) else str(exc)
        if status == 200:
            robots.parse(body.decode("utf-8", "replace").splitlines())
        elif 400 <= status < 500:
            robots.allow_all = True
        else:
            return robots, f"HTTP {status}"
        return robots, None

    async def aclose(self) -> None:
        await self.client.aclose()


def page_text(page: Page) -> str:
    """The main text of a page: trafilatura for HTML (menus, footers and ads left out)."""
    if "html" in page.content_type or page.text.lstrip()[:1] == "<":
        import trafilatura

        return trafilatura.extract(page.text, include_comments=False, include_tables=False) or ""
    if page.content_type.startswith("text/") or not page.content_type:
        return page.text
    raise ItemSkipped(f"not a web page ({page.content_type})")


def _decoded_path(parts) -> str:
    """The path (and query) as a lenient server may resolve it: all escapes decoded, then dot
    segments removed; a trailing slash kept, as robots.txt rules often end with one."""
    path = unquote(parts.path)
    resolved = posixpath.normpath("/" + path.lstrip("/"))
    if path.endswith("/") and resolved != "/":
        resolved += "/"
    return resolved + ("?" + parts.query if parts.query else "")


def normalize_url(url: str) -> str:
    """`url` in the normal form of RFC 3986 section 6: scheme and host in lower case, the default
    port dropped, percent-encoding normalised (unreserved characters decoded, hex in upper case),
    dot segments removed; without its fragment, which is never sent. Done by url-normalize, which
    also encodes international host names in IDNA and merges empty path segments ('//'): both
    still name the same page, and whatever is checked against robots.txt is what gets fetched."""
    from url_normalize import url_normalize

    try:
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise ItemSkipped(f"not an http(s) URL: {url}")
        normal = url_normalize(url)
        urlsplit(normal).port  # noqa: B018 - a port out of range raises here, not inside httpx
    except (ValueError, UnicodeError) as exc:  # e.g. 'Invalid IPv6 URL', a label IDNA refuses
        raise ItemSkipped(f"not a valid URL ({exc}): {url}") from None
    return urldefrag(normal).url


def sitemap_urls(xml: str) -> tuple[list[str], list[str]]:
    """(page URLs, nested sitemap URLs) named in a sitemap or sitemap index."""
    locs = [html.unescape(loc) for loc in re.findall(r"<loc>\s*([^<]+?)\s*</loc>", xml)]
    if "<sitemapindex" in xml:
        return [], locs
    return locs, []
