"""Shared test setup: offline, small thread pools, and a per-session cache folder."""
from __future__ import annotations

import os

# Never reach a hub: every model in the tests is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


def _run_cli(args: list[str]) -> int:
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
    return _run_cli
