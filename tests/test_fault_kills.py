"""SIGKILL at random moments: training (some kills inside checkpoint writing) and the embedding cache
resume with nothing lost, nothing done twice and no torn file. Real subprocesses, real kills."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_captions
from safetensors.torch import load_file

from stylecap.core.encoders import load_clip, save_clip
from stylecap.core.train import CHECKPOINT_NAME, latest_checkpoint
from stylecap.core.vectors import EmbeddingCache
from stylecap.core.weights import check_safetensors
from stylecap.paths import asset

pytestmark = [pytest.mark.fault, pytest.mark.slow]

TINY_CLIP = str(asset("tiny-clip.json"))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """A CLIP with fixed weights (the config alone would be initialised anew by every process)."""
    torch.manual_seed(0)
    model = load_clip.__wrapped__(TINY_CLIP).model
    return save_clip(model, json.loads(Path(TINY_CLIP).read_text()), tmp_path_factory.mktemp("clip") / "tiny")


class Trigger:
    """Holds once ``condition`` has held for ``delay`` seconds: a kill at a random moment after a point."""

    def __init__(self, condition, delay: float = 0.0):
        self.condition, self.delay, self.since = condition, delay, None

    def __call__(self) -> bool:
        if self.since is None and self.condition():
            self.since = time.time()
        return self.since is not None and time.time() - self.since >= self.delay


def kill_when(proc: subprocess.Popen, ready: Trigger, deadline_s: float = 240) -> bool:
    """SIGKILL ``proc`` once ``ready()`` holds; False when it exited first."""
    deadline = time.time() + deadline_s
    while proc.poll() is None and not ready():
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the process made no progress")
        time.sleep(0.002)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


# ----------------------------------------------------------------------------- training

STEPS = 48  # ten kills advance at most ~3 steps each, so the run cannot finish early


def train_cmd(data: Path, clip: Path, out: Path) -> list[str]:
    # Every step is checkpointed and logged, and the whole LM is trained, so a checkpoint (all weights
    # plus AdamW state) takes a good share of each step: kills often land inside one.
    return [sys.executable, "-m", "stylecap", "train", "--data", str(data), "--clip", str(clip), "--out", str(out),
            "--steps", str(STEPS), "--batch-size", "4", "--lr", "1e-3", "--full-finetune", "--checkpoint-every", "1",
            "--log-every", "1", "--quiet", "--resume"]


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            steps.append(-1)  # a torn line
    return steps


def unpublished(run: Path) -> list[Path]:
    """Checkpoint folders still (or never to be) renamed into place: step-N.tmp."""
    folder = run / "checkpoints"
    return [p for p in folder.iterdir() if not CHECKPOINT_NAME.match(p.name)] if folder.is_dir() else []


@pytest.mark.timeout(1500)  # a dozen process starts: minutes on a busy two-core machine
def test_training_killed_at_random_points_resumes_without_lost_or_repeated_steps(tmp_path, clip_folder, cli):
    data = tmp_path / "captions.txt"
    data.write_text("\n".join(make_captions(64)) + "\n")
    run, rng = tmp_path / "run", random.Random(15)
    kills, inside_save = 0, 0
    while kills < 10:
        # Kill points are counted in steps, not seconds: a fast machine runs many steps in a second.
        target = max(logged_steps(run), default=0) + rng.randint(1, 2)
        reached = lambda target=target: max(logged_steps(run), default=0) >= target  # noqa: E731
        if kills % 2:  # inside the checkpoint written right after a step is logged (or, missed, two steps on)
            saving = lambda reached=reached, target=target: reached() and (  # noqa: E731
                bool(unpublished(run)) or max(logged_steps(run), default=0) >= target + 2)
            ready = Trigger(saving, rng.uniform(0, 0.01))
        else:  # a random moment soon after a new step
            ready = Trigger(reached, rng.uniform(0, 0.05))
        proc = subprocess.Popen(train_cmd(data, clip_folder, run), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=os.environ)
        if not kill_when(proc, ready):
            break  # it finished: fewer kills than planned is caught below
        kills += 1
        latest = latest_checkpoint(run)  # never trips over a half-written checkpoint
        done = int(latest.name.split("-")[1]) if latest else 0
        inside_save += any(int(p.name.split("-")[1].split(".")[0]) > done for p in unpublished(run))

    assert kills >= 10, f"the run finished after {kills} kills"
    assert inside_save >= 1
    assert cli(train_cmd(data, clip_folder, run)[3:]) == 0  # the last resume runs to the end

    steps = logged_steps(run)
    lost = sorted(set(range(1, STEPS + 1)) - set(steps))
    repeated = len(steps) - len(set(steps))
    print(f"train: {kills} kill points ({inside_save} inside checkpoint writing), {len(lost)} steps lost, "
          f"{repeated} repeated")
    assert steps == list(range(1, STEPS + 1)), steps
    assert (run / "model" / "stylecap.json").exists() and not unpublished(run)

    reference = tmp_path / "reference"
    assert cli(train_cmd(data, clip_folder, reference)[3:-1]) == 0
    expected = [json.loads(line)["loss"] for line in (reference / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert resumed == pytest.approx(expected, rel=1e-4, abs=1e-4)


# ----------------------------------------------------------------------------- the embedding cache

ENCODE = """
import sys
from pathlib import Path
from stylecap.core.encoders import load_clip
from stylecap.core.vectors import EmbeddingCache
texts = Path(sys.argv[1]).read_text().splitlines()
EmbeddingCache(load_clip(sys.argv[2]), root=Path(sys.argv[3]), shard_size=int(sys.argv[4])).vectors(texts)
"""


def test_embedding_cache_killed_mid_encoding_resumes_with_no_torn_shard(tmp_path, clip_folder):
    texts = make_captions(6_000, seed=5)
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n".join(texts))
    root, shard_size, rng = tmp_path / "cache", 100, random.Random(5)
    shards = lambda: sorted(root.rglob("shard-*.safetensors"))  # noqa: E731
    command = [sys.executable, "-c", ENCODE, str(corpus), str(clip_folder), str(root), str(shard_size)]
    kills = 0
    while kills < 6:
        # Counted in shards, not seconds: a fast machine writes many shards in a second.
        target = len(shards()) + rng.randint(1, 3)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
        ready = Trigger(lambda target=target: len(shards()) >= target, rng.uniform(0, 0.02))

        if not kill_when(proc, ready):
            break
        kills += 1
    assert kills >= 5, f"encoding finished after {kills} kills"

    written = shards()
    for path in written:  # every shard on disk is whole, whatever moment the kill came
        check_safetensors(path)
    encoder = load_clip(str(clip_folder))
    resumed = EmbeddingCache(encoder, root=root, shard_size=shard_size).vectors(texts)
    expected = encoder.encode_texts(texts)
    count = -(-len(texts) // shard_size)
    leftovers = len(list(root.rglob("*.tmp")))  # a kill between writing and renaming leaves its temp file
    print(f"embedding cache: {kills} kill points, {len(written)} of {count} shards written before the last run, "
          f"0 torn, {leftovers} temp files left by kills")
    assert len(shards()) == count and resumed.shape == expected.shape
    assert torch.allclose(resumed, expected, atol=1e-5)
    assert all(load_file(str(p))["vectors"].shape[0] in (shard_size, len(texts) % shard_size) for p in shards())
