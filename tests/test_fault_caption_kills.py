"""`stylecap caption --resume` after SIGKILL at random points: over a folder of a few hundred tiny
images (and a few damaged files), the process is killed again and again — during start-up, between
batches, while a batch is written — and resumed each time. At the end every file has exactly one
record: nothing lost, nothing captioned twice, no torn line."""
from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from stylecap.errors import EXIT_OK, EXIT_PARTIAL
from stylecap.paths import asset

pytestmark = [pytest.mark.fault, pytest.mark.slow]

IMAGES = 300
DAMAGED = {"empty.png": b"", "notes.jpg": b"not a picture\n", "half.png": None}  # None: a truncated PNG
KILLS = 10
TORN_BY_HAND = 3  # after this kill, half a record is appended: a kill inside a write, which is rare at these sizes
SEED = 15


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from stylecap.core.model import CloseConfig, build_model

    config = CloseConfig(clip=str(asset("tiny-clip.json")), clip_dim=32, lm="tiny-t5", lora=False)
    return build_model(config).save(tmp_path_factory.mktemp("model") / "model")


def _folder(root: Path) -> list[Path]:
    """Tiny images in a few subfolders, and the damaged files; every path a record must name."""
    paths = []
    for index in range(IMAGES):
        path = root / f"part-{index % 3}" / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 12), (index % 256, 3 * index % 256, 90)).save(path)
        paths.append(path)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "white").save(buffer, "PNG")
    for name, data in DAMAGED.items():
        (root / name).write_bytes(buffer.getvalue()[:60] if data is None else data)
        paths.append(root / name)
    return paths


def _lines(out: Path) -> list[bytes]:
    return out.read_bytes().splitlines(keepends=True) if out.exists() else []


def _kill_at_random_point(args: list[str], out: Path, rng: random.Random, kills_left: int) -> dict | None:
    """Start a run and SIGKILL it: during start-up, or once it has written a random number of new
    records (plus a random fraction of a batch). None when the run finished before the kill."""
    before = len(_lines(out))
    todo = IMAGES + len(DAMAGED) - before
    startup = rng.random() < 0.2
    target = before + rng.randint(1, max(1, todo // (kills_left + 1)))
    process = subprocess.Popen([sys.executable, "-m", "stylecap", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + (rng.uniform(0.2, 2.5) if startup else 240)
    while process.poll() is None and time.monotonic() < deadline:
        if not startup and len(_lines(out)) >= target:
            # somewhere in the next batch (decoding, captioning or writing); a fast machine may write
            # several batches in that time, so at most one more batch of the largest size
            moment = time.monotonic() + rng.uniform(0, 0.15)
            while time.monotonic() < moment and len(_lines(out)) < target + 8 and process.poll() is None:
                time.sleep(0.002)
            break
        time.sleep(0.005)
    if process.poll() is not None:
        return None
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines = _lines(out)
    return {"kind": "start-up" if startup else "mid-run", "records_before": before, "records_after": len(lines),
            "torn_tail": bool(lines) and not lines[-1].endswith(b"\n")}


def test_sigkill_at_random_points_then_resume_loses_and_repeats_nothing(model_dir, tmp_path, capsys):
    rng = random.Random(SEED)
    files = _folder(tmp_path / "photos")
    out = tmp_path / "captions.jsonl"
    kills = []
    while len(kills) < KILLS:
        workers = str(rng.choice([0, 1]))  # decoding in this process, and in a worker process
        args = ["caption", str(tmp_path / "photos"), "--model", str(model_dir), "--out", str(out), "--resume",
                "--batch-size", str(rng.choice([2, 4, 8])), "--workers", workers, "--beam", "1", "--max-length", "6",
                "--quiet"]
        kill = _kill_at_random_point(args, out, rng, KILLS - len(kills))
        assert kill is not None, f"the run finished before kill {len(kills) + 1}: too few images for the kill points"
        kills.append(kill)
        if len(kills) == TORN_BY_HAND and not kill["torn_tail"]:
            with open(out, "ab") as handle:
                handle.write(b'{"path": "' + os.fsencode(files[-4]) + b'", "capt')
            kill["torn_tail"] = True

    final = subprocess.run([sys.executable, "-m", "stylecap", *args], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    # 6 when the damaged files fail in this last run, 0 when an earlier run already recorded them
    assert final.returncode in (EXIT_OK, EXIT_PARTIAL) and "Traceback" not in final.stderr, final.stderr

    lines = _lines(out)
    torn = [line for line in lines if not line.endswith(b"\n") or not _parses(line)]
    records = [json.loads(line) for line in lines if line not in torn]
    counts = Counter(record["path"] for record in records)
    lost = {str(path) for path in files} - set(counts)
    duplicated = {path: n for path, n in counts.items() if n > 1}
    failed = {Path(r["path"]).name for r in records if r["error"]}
    summary = {"files": len(files), "kill_points": len(kills),
               "kills": dict(Counter(k["kind"] for k in kills)),
               "kills_that_left_a_torn_tail": sum(k["torn_tail"] for k in kills),
               "records": len(records), "lost": len(lost), "duplicated": len(duplicated), "torn_lines": len(torn)}
    with capsys.disabled():
        print("\ncaption kill test:", json.dumps(summary))
    assert not torn and not lost and not duplicated, summary
    assert set(counts) == {str(path) for path in files} and failed == set(DAMAGED)
    assert len(kills) >= 10 and sum(k["records_after"] > k["records_before"] for k in kills) >= 5, kills


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
