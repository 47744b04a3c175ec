"""Chat completions from any OpenAI-compatible server, many at once, politely and within budget.

Retries (429, 5xx, timeouts, dropped connections) back off exponentially with jitter and never
sooner than Retry-After; a 429 also pauses every other request. All retries of a run share one
budget: when it is spent the server is clearly unwell, and the run stops with what it has saved.
A malformed reply fails only its own input; it is recorded and tried again on the next run.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from urllib.parse import urlsplit

from stylecap.errors import ServiceError, UsageError
from stylecap.generate.limits import Pacer, backoff, parse_retry_after
from stylecap.generate.progress import Tally

# List prices in dollars per million (prompt, completion) tokens when this was written; they change,
# so --price-in/--price-out override them. Unknown models report no cost rather than a wrong one.
LIST_PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
OPENAI_URL = "https://api.openai.com/v1"
# Sent instead of a key to servers that were given none: local servers (vLLM, Ollama, llama.cpp)
# ignore it, and the openai client would otherwise fill the gap from OPENAI_API_KEY.
NO_KEY = "no-key"
NO_LLM = ("no LLM to ask: pass --base-url URL (any OpenAI-compatible server), set OPENAI_BASE_URL, "
          "or set OPENAI_API_KEY to use OpenAI; or build from text without an LLM: "
          "--source books, web or reviews")


@dataclasses.dataclass
class LLMSettings:
    model: str = "gpt-4o-mini"
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else OpenAI itself
    api_key: str | None = None  # sent to whatever server base_url names
    api_key_env: str | None = None  # the environment variable holding the key for base_url
    concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_tokens: int = 64
    temperature: float = 1.0
    timeout: float = 60.0  # seconds per request
    max_attempts: int = 6  # per input
    backoff: float = 0.5  # seconds: the longest first wait between attempts, doubled each time
    retry_budget: int | None = None  # retries in the whole run; None: 100 + a quarter of the inputs
    price_in: float | None = None  # dollars per million prompt tokens
    price_out: float | None = None

    def resolved_base_url(self) -> str | None:
        """The server to ask, in lookup order: --base-url, $OPENAI_BASE_URL, else None (OpenAI)."""
        named_by = "--base-url" if self.base_url else "OPENAI_BASE_URL"
        url = self.base_url or os.environ.get("OPENAI_BASE_URL") or None
        if url is not None:
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 - parsing the port is the check
            except ValueError:
                parts = None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise UsageError(f"{named_by} is not an http(s) URL",
                                 fix="give a server address such as http://localhost:8000/v1")
        return url

    def is_openai(self) -> bool:
        """Whether the server is OpenAI's own API (https on the default port), the only server
        OPENAI_API_KEY is sent to unasked."""
        url = self.resolved_base_url()
        if url is None:
            return True
        parts = urlsplit(url)
        return parts.scheme == "https" and parts.hostname == "api.openai.com" and parts.port in (None, 443)

    def endpoint(self) -> tuple[str, str | None]:
        """(base URL, API key or None) for this run; UsageError when there is nothing to ask.

        A key goes only where the user sent it: --api-key or --api-key-env to any server, and
        OPENAI_API_KEY to OpenAI itself. A local or third-party server never sees OPENAI_API_KEY
        unless asked, so a key meant for OpenAI is not handed to whoever runs that server."""
        if self.api_key and self.api_key_env:
            raise UsageError("--api-key and --api-key-env both given", fix="pass only one of them")
        url = self.resolved_base_url()
        if self.api_key:
            return url or OPENAI_URL, self.api_key
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UsageError(f"environment variable {self.api_key_env} is not set or empty "
                                 "(named by --api-key-env)", fix=f"export {self.api_key_env}=... first")
            return url or OPENAI_URL, key
        if not self.is_openai():
            return url, None
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            if url is None:
                raise UsageError(NO_LLM)
            raise UsageError("OPENAI_API_KEY is not set", self.public_base_url(),
                             "export OPENAI_API_KEY=... (it is never written anywhere)")
        return url or OPENAI_URL, key

    def is_local(self) -> bool:
        url = self.resolved_base_url()
        return url is not None and urlsplit(url).hostname in _LOCAL_HOSTS

    def price(self) -> tuple[float, float] | None:
        if self.price_in is not None or self.price_out is not None:
            return (self.price_in or 0.0, self.price_out or 0.0)
        if self.is_local():
            return (0.0, 0.0)
        if self.resolved_base_url() is None:
            return LIST_PRICES.get(self.model)
        return None

    def public_base_url(self) -> str:
        """The server address fit for a manifest: no credentials, no query string."""
        parts = urlsplit(self.resolved_base_url() or "https://api.openai.com/v1")
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


class ItemFailed(Exception):
    """This input could not be done in this run (the reason is recorded; the next run retries it)."""


class ItemSkipped(ItemFailed):
    """This input can never give sentences, however often it is tried (a page robots.txt forbids,
    HTTP 404 or 410, an empty or unreadable book): it is recorded as skipped with the reason, and
    neither retried nor counted as a failure."""


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)  # about four characters per token for English


class LLM:
    def __init__(self, settings: LLMSettings, tally: Tally, retry_budget: int):
        import openai

        self.settings, self.tally, self.retries_left = settings, tally, retry_budget
        base_url, key = settings.endpoint()
        self.sends_key = key is not None
        # Everything the client could take from the environment is passed explicitly: it must not
        # fall back on OPENAI_API_KEY or OPENAI_BASE_URL behind our back.
        self.client = openai.AsyncOpenAI(api_key=key or NO_KEY, base_url=base_url,
                                         timeout=settings.timeout, max_retries=0)
        self.requests = Pacer(settings.requests_per_minute and settings.requests_per_minute / 60)
        self.tokens = Pacer(settings.tokens_per_minute and settings.tokens_per_minute / 60)

    async def complete(self, prompt: str, sample: int = 0) -> str:
        """The reply to `prompt` (`sample` varies the server's sampling seed)."""
        attempt = 0
        while True:
            attempt += 1
            await self.requests.wait()
            await self.tokens.wait(estimate_tokens(prompt) + self.settings.max_tokens)
            self.tally.requests += 1
            try:
                response = await self.client.chat.completions.create(
                    model=self.settings.model, messages=[{"role": "user", "content": prompt}],
                    max_tokens=self.settings.max_tokens, temperature=self.settings.temperature,
                    seed=sample)
            except Exception as exc:  # noqa: BLE001 - sorted into retry, skip or stop just below
                kind, retry_after = self._classify(exc)
            else:
                return self._text(response)
            if attempt >= self.settings.max_attempts:
                raise self._exhausted(kind, attempt)
            await self._before_retry(kind, attempt, retry_after)

    def _exhausted(self, kind: str, attempts: int) -> Exception:
        """What an input's last failed attempt means. A server that cannot be reached is down, not
        troubled by this input: that stops the run (exit 5) however many inputs are left, as a
        spent retry budget does. Other failures (a timeout, a 500) may belong to this one prompt,
        so only this input fails and the run goes on."""
        if kind == "connection error":
            return ServiceError(f"the LLM server is not answering ({kind} after {attempts} attempts)",
                                self.settings.public_base_url(),
                                "check that it runs and --base-url, then run the same command again to resume")
        return ItemFailed(f"{kind} after {attempts} attempts")

    def _classify(self, exc: Exception) -> tuple[str, float | None]:
        """(kind, Retry-After) for a failure worth retrying; raises for the others."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return "timeout", None
        if isinstance(exc, openai.APIConnectionError):
            return "connection error", None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 429 or status >= 500 or status in (408, 409):
                return f"HTTP {status}", parse_retry_after(exc.response.headers)
            if status in (401, 403):
                raise self._refused(status) from None
            if status == 404:
                raise ServiceError(f"model {self.settings.model!r} or its endpoint was not found (HTTP 404)",
                                   self.settings.public_base_url(), "check --model and --base-url") from None
            raise ItemFailed(f"rejected (HTTP {status})") from None
        if isinstance(exc, ValueError):  # the body was not JSON
            raise ItemFailed("malformed response") from None
        raise exc

    def _refused(self, status: int) -> ServiceError:
        where = self.settings.public_base_url()
        if not self.sends_key:
            return ServiceError(f"the LLM server wants an API key (HTTP {status})", where,
                                "pass --api-key-env NAME (the variable holding its key); "
                                "OPENAI_API_KEY is sent only to api.openai.com unless you ask")
        source = (f"${self.settings.api_key_env}" if self.settings.api_key_env
                  else "--api-key" if self.settings.api_key else "$OPENAI_API_KEY")
        return ServiceError(f"the LLM server refused the API key (HTTP {status})", where, f"check {source}")

    async def _before_retry(self, kind: str, attempt: int, retry_after: float | None) -> None:
        if self.retries_left <= 0:
            raise ServiceError(f"the LLM server kept failing ({kind}) and the retry budget is spent",
                               self.settings.public_base_url(),
                               "run the same command again to resume, or raise --retry-budget")
        self.retries_left -= 1
        self.tally.retried += 1
        delay = backoff(attempt, base=self.settings.backoff, retry_after=retry_after)
        if kind == "HTTP 429":
            self.requests.pause(delay)
        await asyncio.sleep(delay)

    def _text(self, response) -> str:
        usage = getattr(response, "usage", None)
        self.tally.tokens_in += getattr(usage, "prompt_tokens", 0) or 0
        self.tally.tokens_out += getattr(usage, "completion_tokens", 0) or 0
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise ItemFailed("malformed response")
        if not choices:
            raise ItemFailed("empty choices")
        content = getattr(getattr(choices[0], "message", None), "content", None)
        if not isinstance(content, str) or not content.strip():
            raise ItemFailed("empty reply")
        return content

    async def aclose(self) -> None:
        await self.client.close()



def clean_reply(reply: str, label: str | None = None) -> list[str]:
    """The captions in a reply: one per non-empty line, without list marks, quotes, or the answer
    label the model may repeat from the prompt (e.g. 'First person:')."""
    captions = []
    for line in reply.splitlines():
        line = _LIST_MARK.sub("", line.strip())
        if label and line.lower().startswith(label.lower() + ":"):
            line = line[len(label) + 1:]
        line = line.strip().strip("\"'\u201c\u201d").strip()
        if line:
            captions.append(line)
    return captions


_LIST_MARK = re.compile(r"^(?:[-*\u2022]|\d+[.)])\s+")
