"""`stylecap caption` launched in several processes (torchrun, gloo on CPU): each file is captioned by
exactly one process, the shards are merged into the one --out, and a run left half done continues
under any number of processes without captioning anything twice."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from PIL import Image

from stylecap.errors import EXIT_OK, EXIT_USAGE
from stylecap.paths import asset

IMAGES = 10
FAST = ["--beam", "1", "--max-length", "4", "--batch-size", "2", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from stylecap.core.model import CloseConfig, build_model

    config = CloseConfig(clip=str(asset("tiny-clip.json")), clip_dim=32, lm="tiny-t5", lora=False)
    return build_model(config).save(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for index in range(IMAGES):
        pixels = torch.randint(0, 256, (32, 48, 3), generator=torch.Generator().manual_seed(index), dtype=torch.uint8)
        paths.append(folder / f"img-{index:02d}.png")
        Image.fromarray(pixels.numpy()).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def reference(photos, model_dir, tmp_path_factory) -> dict[str, str]:
    """Path → caption from a run in one process."""
    out = tmp_path_factory.mktemp("reference") / "one.jsonl"
    assert run_cli(["caption", str(photos[0].parent), "--model", str(model_dir), "--out", str(out), *FAST]) == 0
    return {r["path"]: r["caption"] for r in read_jsonl(out)}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(processes: int, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), "-m", "stylecap", "caption", *map(str, args), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def shard(out: Path, rank: int, size: int) -> Path:
    return out.with_name(f"{out.stem}.shard-{rank}-of-{size}{out.suffix}")


def write_records(path: Path, photos: list[Path], caption: str, torn: bool = False) -> None:
    """Records as a process of a killed run left them (``torn``: its last write cut short)."""
    lines = [json.dumps({"path": str(p), "caption": caption, "score": 0.5, "model": "m", "error": ""}) + "\n"
             for p in photos]
    path.write_text("".join(lines) + ('{"path": "' + str(photos[0]) if torn else ""))


def assert_each_file_once(out: Path, photos: list[Path], reference: dict[str, str], kept: dict[str, str]) -> None:
    """Every photo has exactly one record: ``kept`` ones keep what the earlier run wrote, the others
    have the caption a run in one process gives; no shard is left."""
    records = read_jsonl(out)
    assert sorted(r["path"] for r in records) == sorted(map(str, photos))
    assert {r["path"]: r["caption"] for r in records} == reference | kept
    assert not list(out.parent.glob("*.shard-*"))


def test_two_processes_caption_each_file_once_as_one_would(photos, model_dir, reference, tmp_path):
    out, page = tmp_path / "captions.jsonl", tmp_path / "gallery.html"
    done = torchrun(2, photos[0].parent, "--model", model_dir, "--out", out, "--html", page)
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert_each_file_once(out, photos, reference, {})
    assert [r["path"] for r in read_jsonl(out)] == sorted(reference)  # the folder's order, as in one process
    assert page.read_text().count("<figure>") == IMAGES
    assert "process 1 of 2: captioned 5 images" in done.stderr
    assert "all processes: captioned 10 images" in done.stderr


def test_a_half_done_run_continues_in_three_processes(photos, model_dir, reference, tmp_path):
    out = tmp_path / "captions.jsonl"
    write_records(shard(out, 0, 2), photos[0:4:2], "left by process 0", torn=True)
    write_records(shard(out, 1, 2), photos[1:4:2], "left by process 1")
    kept = {str(p): f"left by process {i % 2}" for i, p in enumerate(photos[:4])}

    done = torchrun(3, photos[0].parent, "--model", model_dir, "--out", out, "--resume")
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert "all processes: captioned 6 images, 4 already done" in done.stderr
    assert_each_file_once(out, photos, reference, kept)


def test_a_half_done_run_continues_in_one_process(photos, model_dir, reference, tmp_path, cli):
    out = tmp_path / "captions.jsonl"
    write_records(out, photos[:2], "merged before")  # a run of three, killed after an earlier merge
    write_records(shard(out, 0, 3), photos[2:3], "left by process 0")
    write_records(shard(out, 2, 3), photos[4:6], "left by process 2", torn=True)
    kept = {str(photos[0]): "merged before", str(photos[1]): "merged before", str(photos[2]): "left by process 0",
            str(photos[4]): "left by process 2", str(photos[5]): "left by process 2"}

    args = ["caption", str(photos[0].parent), "--model", str(model_dir), "--out", str(out), *FAST]
    assert cli(args) == EXIT_USAGE  # without --resume, the earlier run's records are never written over
    assert cli([*args, "--resume"]) == EXIT_OK
    assert_each_file_once(out, photos, reference, kept)


@pytest.mark.parametrize("env, out, message", [
    ({"WORLD_SIZE": "2", "RANK": "0"}, False, "captioning in 2 processes needs --out"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, True, "RANK must be a process number from 0 to 1"),
    ({"WORLD_SIZE": "two"}, True, "WORLD_SIZE must be a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": ""}, True, "cannot join the other processes"),
])
def test_launch_errors_are_one_line(env, out, message, photos, model_dir, tmp_path, monkeypatch, capsys, cli):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["caption", str(photos[0]), "--model", str(model_dir), "--quiet"]
    assert cli(args + ["--out", str(tmp_path / "c.jsonl")] * out) == EXIT_USAGE
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line


@pytest.mark.parametrize("local, expected", [(None, 8), ("1", 8), ("4", 3), ("16", 0), ("many", 8)])
def test_processes_on_one_machine_share_its_decoding_cores(local, expected, monkeypatch):
    from stylecap.core import images

    monkeypatch.setattr(images, "usable_cores", lambda: 16)
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert images.default_workers() == expected
