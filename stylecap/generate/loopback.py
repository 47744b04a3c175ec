"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

It speaks real HTTP/1.1 (keep-alive, Content-Length bodies) so the real ``openai`` client talks to
it unchanged. Every reply is a deterministic function of the prompt, so two runs over the same
inputs produce the same corpus. Faults are injected by request number (1-based, in arrival order):

    429      rate limited, with a Retry-After header
    500      internal server error
    timeout  the reply never comes (the client's timeout fires)
    badjson  a 200 whose body is not JSON
    empty    a 200 with an empty ``choices`` list
    401      the server wants an API key

Every request as it arrived on the wire (head and body) is kept in ``received``, so tests can see
what a client sent, such as which key.

Run it alone with ``python -m stylecap.generate.loopback --latency 0.2``; it prints its base URL.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
import time

# Word pools for the replies: six slots drawn from a hash of the prompt give sentences that are
# distinct and rarely near-duplicates of each other, like a real model's varied outputs.
_POOLS = [
    "I we my-friend my-sister our-guide my-uncle".split(),
    "spotted noticed watched found passed photographed admired followed".split(),
    ("a-red a-tiny an-old a-striped a-wooden a-bright a-rusty a-quiet a-tall a-crooked "
     "a-painted a-sleepy").split(),
    ("kite bicycle lantern ferry tram kitten umbrella bench teapot sailboat scarecrow fountain "
     "tractor parrot wagon clock").split(),
    ("near-the-harbour by-the-market under-a-bridge beside-the-river on-a-hill in-the-park "
     "at-the-station behind-the-bakery along-the-pier inside-the-barn").split(),
    ("at-dawn this-morning after-lunch at-dusk in-the-rain on-sunday in-the-snow "
     "before-supper").split(),
]


def reply_for(prompt: str) -> str:
    """The server's deterministic 'model': a short first-person scene chosen by the prompt's hash."""
    digest = hashlib.blake2b(prompt.encode(), digest_size=16).digest()
    words = [pool[digest[i] % len(pool)].replace("-", " ") for i, pool in enumerate(_POOLS)]
    tag = digest[8:10].hex()  # keeps replies to different prompts from colliding exactly
    sentence = " ".join(words)
    return f"{sentence[0].upper()}{sentence[1:]}, sign {tag} in view."


class LoopbackLLM:
    """Serve chat completions on 127.0.0.1 from a background thread; use as a context manager."""

    def __init__(self, latency: float = 0.0, faults: dict[int, str] | None = None,
                 retry_after: float = 0.05, port: int = 0):
        self.latency, self.faults, self.retry_after = latency, dict(faults or {}), retry_after
        self.port = port
        self.requests = 0  # chat-completion requests received, faulty ones included
        self.received: list[bytes] = []  # every request's bytes, in arrival order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "LoopbackLLM":
        self._thread = threading.Thread(target=self._serve_forever, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)

    def _serve_forever(self) -> None:
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=1024))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            # Cancel connections still open (a hung 'timeout' reply, idle keep-alives) so the loop
            # closes quietly.
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                method, path, body, raw = request
                self.received.append(raw)
                status, headers, body = await self._answer(method, path, body)
                _write_response(writer, status, headers, body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, body: bytes) -> tuple[int, dict, bytes]:
        if method != "POST" or path.rstrip("/") != "/v1/chat/completions":
            return 404, {}, _json({"error": {"message": f"no route {method} {path}"}})
        self.requests += 1
        fault = self.faults.get(self.requests)
        await asyncio.sleep(self.latency)
        if fault == "timeout":
            await asyncio.sleep(3600)
        if fault == "429":
            return 429, {"Retry-After": f"{self.retry_after:g}"}, _json(
                {"error": {"message": "rate limited", "type": "rate_limit_error"}})
        if fault == "401":
            return 401, {}, _json({"error": {"message": "missing API key", "type": "invalid_request_error"}})
        if fault == "500":
            return 500, {}, _json({"error": {"message": "internal error"}})
        if fault == "badjson":
            return 200, {}, b'{"id": "x", "choices": [{"message": '
        request = json.loads(body)
        prompt = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
        text = reply_for(prompt)
        choices = [] if fault == "empty" else [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]
        return 200, {}, _json({
            "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model", "loopback"), "choices": choices,
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt) // 4 + len(text.split())},
        })


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes, bytes] | None:
    """(method, path, body, the request's raw bytes), or None once the client has hung up."""
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return method, path, body, head + body


def _write_response(writer: asyncio.StreamWriter, status: int, headers: dict, body: bytes) -> None:
    head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
            "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: keep-alive"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with LoopbackLLM(latency=args.latency, port=args.port) as server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
