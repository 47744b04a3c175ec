"""Where sentences come from. Each source turns its inputs into items (a unit of work, finished or
not as a whole, named by a key that is stable across runs) and each item into found sentences."""
from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from stylecap.errors import UsageError
from stylecap.generate.books import BadBook, Book
from stylecap.generate.llm import LLM, ItemFailed, ItemSkipped, LLMSettings, clean_reply, estimate_tokens
from stylecap.generate.local import LocalLM, check_local_model
from stylecap.generate.progress import Tally
from stylecap.generate.seeds import builtin_seeds, seed_set_name
from stylecap.generate.styles import Style
from stylecap.generate.tables import existing_file, load_table, read_captions, read_lines, require_columns
from stylecap.generate.text import frequent_names, iter_sentences, name_pattern, split_sentences
from stylecap.generate.web import Fetcher, WebSettings, normalize_url, page_text, sitemap_urls

REVIEW_ROWS = 1000  # reviews per item: a resumed run redoes at most this many
TEXT_COLUMNS = ("review", "text", "reviewText", "review_text", "body", "content")
RATING_COLUMNS = ("rating", "stars", "overall", "score")
PROVIDERS = ("openai", "local")  # any OpenAI-compatible server; a transformers model in this process


@dataclasses.dataclass
class SourceOptions:
    inputs: list[str] = dataclasses.field(default_factory=list)  # files, URLs (what to read)
    subjects: list[str] = dataclasses.field(default_factory=list)  # free mode, besides --input files
    samples: int = 1  # LLM requests per seed or subject
    text_column: str | None = None  # seed captions or review text
    rating_column: str | None = None
    min_rating: float | None = None
    characters: list[str] = dataclasses.field(default_factory=list)
    llm: LLMSettings = dataclasses.field(default_factory=LLMSettings)
    provider: str = "openai"  # who answers the llm source's prompts (PROVIDERS)
    web: WebSettings = dataclasses.field(default_factory=WebSettings)
    notify: Callable[[str], None] | None = None  # told when a default stands in for a missing input


@dataclasses.dataclass(frozen=True)
class Item:
    key: str
    payload: tuple


@dataclasses.dataclass
class Found:
    """A candidate sentence and where it came from; the fields below it steer its filters."""

    text: str
    provenance: dict
    seed: str | None = None  # the caption it rewrites: a copy of it is dropped
    visual: bool = False  # found (not written) text must describe something visible
    names: re.Pattern | None = None  # ... and mention one of these characters


class LLMSource:
    """Rewrite seed captions into the style, or write about subjects, with a chat model."""

    def __init__(self, style: Style, options: SourceOptions, tally: Tally):
        self.style, self.options, self.tally = style, options, tally
        if options.provider not in PROVIDERS:
            raise UsageError(f"unknown provider {options.provider!r}",
                             fix="use openai (any OpenAI-compatible server) or local (a transformers model)")
        self.local = options.provider == "local"
        if self.local:
            if options.llm.base_url:
                raise UsageError("--base-url names a server, but --provider local runs the model here",
                                 fix="drop --base-url, or use --provider openai")
            check_local_model(options.llm.model)
        # A local model takes --concurrency prompts per batch; twice as many workers keep the next
        # batch filled while one generates.
        self.concurrency = options.llm.concurrency * (2 if self.local else 1)
        self.llm: LLM | None = None

    async def items(self) -> list[Item]:
        inputs = []
        if not self.options.inputs and not self.options.subjects:
            if self.style.mode != "rewrite":
                raise UsageError(f"style {self.style.name} needs subjects (--input FILE or --subject)")
            inputs = self._builtin_seeds()
        for path in self.options.inputs:
            read = read_captions(path, self.options.text_column) if self.style.mode == "rewrite" else read_lines(path)
            inputs += [(f"{Path(path).name}:{number}", text) for number, text in read]
        inputs += [(subject, subject) for subject in self.options.subjects]
        kind = "seed" if self.style.mode == "rewrite" else "subject"
        samples = self.options.samples
        return [Item(f"{kind}:{name}" + (f"#{k}" if samples > 1 else ""), (name, text, k))
                for name, text in inputs for k in range(samples)]

    def _builtin_seeds(self) -> list[tuple[str, str]]:
        """With no --input, a rewrite style rewrites the built-in everyday-scene captions."""
        seeds = builtin_seeds()
        if self.options.notify:
            self.options.notify(f"no --input: rewriting the {len(seeds):,} built-in everyday-scene captions "
                                f"({seed_set_name()}); pass --input FILE to rewrite your own")
        return seeds

    def open(self, retry_budget: int) -> None:
        if self.local:
            self.tally.price = (0.0, 0.0)  # it runs here: nothing to pay per token
            self.llm = LocalLM(self.options.llm, self.tally)
        else:
            self.llm = LLM(self.options.llm, self.tally, retry_budget)

    async def produce(self, item: Item) -> list[Found]:
        name, text, sample = item.payload
        reply = await self.llm.complete(self.style.render(text), sample)
        rewrite = self.style.mode == "rewrite"
        provenance = {"prompt": self.style.prompt_id, "model": self.options.llm.model,
                      "provider": self.options.provider,
                      **({"seed_id": name, "seed": text} if rewrite else {"subject": text})}
        names = name_pattern([text]) if self.style.filters.characters and not rewrite else None
        return [Found(caption, provenance, seed=text if rewrite else None, names=names)
                for caption in clean_reply(reply, self.style.reply_label)]

    def estimate(self, items: list[Item]) -> dict:
        """Tokens and cost before starting: prompts as sent, replies at their maximum length."""
        prompt_tokens = sum(estimate_tokens(self.style.render(item.payload[1])) for item in items)
        completion_tokens = len(items) * self.options.llm.max_tokens
        price = (0.0, 0.0) if self.local else self.options.llm.price()
        cost = None if price is None else (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
        return {"requests": len(items), "prompt_tokens": prompt_tokens,
                "max_completion_tokens": completion_tokens, "max_cost": cost}

    async def aclose(self) -> None:
        if self.llm:
            await self.llm.aclose()


class _FoundTextSource:
    """Shared by sources of existing text: a web fetcher for URLs, the style's character rule."""

    concurrency = 1

    def __init__(self, style: Style, options: SourceOptions, tally: Tally):
        self.style, self.options, self.tally = style, options, tally
        self.fetcher: Fetcher | None = None

    def open(self, retry_budget: int) -> None:
        self.fetcher = Fetcher(self.options.web)

    def estimate(self, items: list[Item]) -> dict:
        return {"inputs": len(items)}

    async def fetch(self, url: str):
        page = await self.fetcher.get(url)
        self.tally.requests = self.fetcher.requests
        return page

    def found(self, text: Callable[[], Iterable[str]], provenance: dict, min_name_count: int,
              offset: int = 0) -> Iterator[Found]:
        """The sentences of a text (a book or a page, starting at `offset`) as candidates, with
        their offsets, found as a stream: `text()` gives the text in pieces, once to count names
        (when the style wants characters) and once to split sentences."""
        names = None
        if self.style.filters.characters:
            given = self.options.characters or frequent_names(text(), min_name_count)
            names = name_pattern(given)
            if names is None:
                raise ItemFailed("no character names found; pass --characters")
        visual = self.style.filters.visual
        return (Found(sentence, {**provenance, "offset": at}, visual=visual, names=names)
                for at, sentence in iter_sentences(text(), offset))

    async def aclose(self) -> None:
        if self.fetcher:
            await self.fetcher.aclose()


class BooksSource(_FoundTextSource):
    async def items(self) -> list[Item]:
        _need_inputs(self.options, "book files or URLs")
        for path in self.options.inputs:
            if not _is_url(path):
                existing_file(path)  # a missing book fails now, not halfway through the run
        return [Item(f"book:{path}", (path,)) for path in self.options.inputs]

    async def produce(self, item: Item) -> Iterator[Found]:
        """The book's sentences as a stream (read and split as they are taken)."""
        (where,) = item.payload
        book = _open_book((await self.fetch(where)).body if _is_url(where) else where)
        try:
            start, _ = book.span()
            if not book.has_text:
                raise ItemSkipped("empty book")
            found = self.found(book.story, {"file": where}, min_name_count=5, offset=start)
        except OSError as exc:
            book.close()
            raise ItemFailed(f"cannot read the file ({exc.strerror})") from None
        except BaseException:
            book.close()
            raise
        return _closing(book, found)


class WebSource(_FoundTextSource):
    @property
    def concurrency(self) -> int:
        return self.options.web.concurrency

    async def items(self) -> list[Item]:
        _need_inputs(self.options, "URLs, a file of URLs or a sitemap URL")
        urls: list[str] = []
        for entry in self.options.inputs:
            if _is_url(entry) and _looks_like_sitemap(entry):
                urls += await self._sitemap(entry)
            elif _is_url(entry):
                urls.append(entry)
            else:
                urls += [line for _, line in read_lines(entry) if not line.startswith("#")]
        return [Item(f"url:{url}", (url,)) for url in dict.fromkeys(map(_normal_or_as_is, urls))]

    async def _sitemap(self, url: str, depth: int = 0) -> list[str]:
        if self.fetcher is None:
            self.open(0)
        try:
            pages, nested = sitemap_urls((await self.fetch(url)).text)
        except ItemFailed as exc:
            raise UsageError(f"cannot read the sitemap: {exc}", url) from None
        for inner in nested if depth < 2 else []:
            pages += await self._sitemap(inner, depth + 1)
        return pages

    def open(self, retry_budget: int) -> None:
        if self.fetcher is None:
            super().open(retry_budget)

    async def produce(self, item: Item) -> Iterator[Found]:
        (url,) = item.payload
        page = await self.fetch(url)
        provenance = {"url": url} if page.url == url else {"url": url, "final_url": page.url}
        text = await asyncio.to_thread(page_text, page)  # extraction is CPU work: keep fetching meanwhile
        return self.found(lambda: [text], provenance, min_name_count=3)


class ReviewsSource(_FoundTextSource):
    def __init__(self, style: Style, options: SourceOptions, tally: Tally):
        super().__init__(style, options, tally)
        self.tables: dict[str, object] = {}

    async def items(self) -> list[Item]:
        _need_inputs(self.options, "review files (CSV, JSONL, Parquet)")
        items = []
        for path in self.options.inputs:
            table = self.tables[path] = load_table(path)
            self._columns(path, table)  # check them before any work starts
            items += [Item(f"reviews:{path}:{start}", (path, start))
                      for start in range(0, len(table), REVIEW_ROWS)]
        return items

    def _columns(self, path: str, table) -> tuple[str, str | None]:
        names = table.column_names
        text = self.options.text_column or next((c for c in TEXT_COLUMNS if c in names), TEXT_COLUMNS[0])
        rating = self.options.rating_column or next((c for c in RATING_COLUMNS if c in names), None)
        if self.options.min_rating is not None and rating is None:
            raise UsageError("--min-rating needs a rating column", path, "pass --rating-column")
        require_columns(path, names, [text] + ([rating] if rating else []))
        return text, rating

    async def produce(self, item: Item) -> list[Found]:
        path, start = item.payload
        table = self.tables[path]
        text_column, rating_column = self._columns(path, table)
        rows = table[start:start + REVIEW_ROWS]
        ratings = rows[rating_column] if rating_column else [None] * len(rows[text_column])
        found = []
        for row, (review, rating) in enumerate(zip(rows[text_column], ratings, strict=True), start):
            if not review or not _rated_enough(rating, self.options.min_rating):
                continue
            found += [Found(sentence, {"file": path, "row": row, "offset": offset}, visual=self.style.filters.visual)
                      for offset, sentence in split_sentences(str(review))]
        return found


def _rated_enough(rating, minimum: float | None) -> bool:
    if minimum is None:
        return True
    try:
        return float(rating) >= minimum
    except (TypeError, ValueError):
        return False


SOURCES = {"llm": LLMSource, "books": BooksSource, "web": WebSource, "reviews": ReviewsSource}


def _need_inputs(options: SourceOptions, what: str) -> None:
    if not options.inputs:
        raise UsageError(f"no inputs: pass {what} with --input")


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _normal_or_as_is(url: str) -> str:
    """One spelling per page (so a page listed twice is fetched once); a URL that cannot be put in
    normal form stays as written and is skipped, with its reason, when its turn comes."""
    try:
        return normalize_url(url)
    except ItemSkipped:
        return url


def _open_book(source: str | bytes) -> Book:
    try:
        return Book(source)
    except BadBook as exc:  # the file is what it is: reading it again gives the same
        raise ItemSkipped(str(exc)) from None
    except OSError as exc:  # gone or unreadable since the run started: another run may manage
        raise ItemFailed(f"cannot read the file ({exc.strerror})") from None


def _closing(book: Book, found: Iterator[Found]) -> Iterator[Found]:
    """`found`, then the book's file closed."""
    try:
        yield from found
    except OSError as exc:  # the file went away or broke while it was being read
        raise ItemFailed(f"cannot read the file ({exc.strerror})") from None
    finally:
        book.close()


def _looks_like_sitemap(url: str) -> bool:
    return "sitemap" in url.rsplit("/", 1)[-1].lower()
