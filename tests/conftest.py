"""Shared test setup: offline, small thread pools, a per-session cache folder, the in-process `cli`
runner and a loopback page server."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Never reach a hub: every model in the tests is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# As the command line sets it before any library loads: in-process CLI tests see what users see.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(2)  # the CI machine has 2 cores; more threads only contend
    except ImportError:
        pass


@pytest.fixture(scope="session", autouse=True)
def _stylecap_cache(tmp_path_factory):
    """Keep caches (materialised tiny models, embeddings) inside the test session's temp folder."""
    cache = tmp_path_factory.mktemp("stylecap-cache")
    old = os.environ.get("STYLECAP_CACHE")
    os.environ["STYLECAP_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("STYLECAP_CACHE", None)
    else:
        os.environ["STYLECAP_CACHE"] = old


# ----------------------------------------------------------------------------- tiny local models

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star", "hexagon"]


@pytest.fixture(scope="session")
def tiny_clip_spec() -> str:
    """A random-weight tiny open_clip model from the config shipped in the package (32-d vectors)."""
    from stylecap.paths import asset

    return str(asset("tiny-clip.json"))


def make_captions(count: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [f"a {rng.choice(['small', 'large'])} {rng.choice(COLOURS)} {rng.choice(SHAPES)} left of a "
            f"{rng.choice(COLOURS)} {rng.choice(SHAPES)}" for _ in range(count)]


@pytest.fixture(scope="session")
def caption_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "captions.txt"
    path.write_text("\n".join(make_captions(256)) + "\n")
    return path


def run_cli(args: list[str]) -> int:
    """The command line in this process (same code as the installed command, without its start-up time)."""
    from stylecap.cli import main

    try:
        main(args)
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


@pytest.fixture
def cli():
    """Run ``stylecap ARGS…`` in-process and return its exit code."""
    return run_cli


# ----------------------------------------------------------------------------- loopback web pages


class PageHandler(BaseHTTPRequestHandler):
    """A loopback page server's handler that answers with a body and stays quiet: subclasses route in
    ``do_GET`` and answer through ``_send``; nothing is logged, so a test's captured stderr holds only
    what stylecap printed."""

    def _send(self, status: int, body: str, content_type: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class PageServer(ThreadingHTTPServer):
    """One daemon thread per request: closing the server never waits for a client that is still reading."""

    daemon_threads, block_on_close = True, False


@contextmanager
def serve_pages(handler: type[PageHandler], server_class: type[PageServer] = PageServer) -> Iterator[str]:
    """Serve ``handler`` on a free 127.0.0.1 port from a background thread; yields the site's base URL."""
    server = server_class(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
