"""The training loop: the loss falls, checkpoints resume exactly, two CPU processes train together."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stylecap.core.train import latest_checkpoint
from stylecap.errors import UsageError
from stylecap.options import ModelChoices, TrainOptions
from stylecap.workflows.pipeline import train_task


def metrics(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_short_text_only_run_lowers_the_loss(tmp_path, caption_file, tiny_clip_spec):
    options = TrainOptions(out_dir=tmp_path / "run", steps=40, batch_size=16, lr=1e-3, log_every=5,
                           progress=False)
    model_dir = train_task("caption", caption_file, ModelChoices(clip=tiny_clip_spec, lora=False), options)
    losses = metrics(tmp_path / "run")
    assert losses[40] < 0.6 * losses[5], losses
    assert (model_dir / "stylecap.json").exists()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["task"] == "caption" and run["rows"] == 256


def stylecap_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "stylecap", *args]


def train_args(data: Path, clip: str, out: Path, steps: int) -> list[str]:
    return ["train", "--data", str(data), "--clip", clip, "--out", str(out), "--steps", str(steps),
            "--batch-size", "8", "--lr", "1e-3", "--checkpoint-every", "10", "--quiet"]


def test_resume_after_kill_reproduces_the_uninterrupted_loss_curve(tmp_path, caption_file, tiny_clip_spec, capsys,
                                                                    cli):
    steps = 120  # long enough that the kill lands mid-run (a checkpoint every 10 steps)

    run = tmp_path / "interrupted"
    proc = subprocess.Popen(stylecap_cmd(*train_args(caption_file, tiny_clip_spec, run, steps)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    deadline = time.time() + 120
    while latest_checkpoint(run) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = int(latest_checkpoint(run).name.split("-")[1])
    assert stopped_at < steps, "the run finished before it could be interrupted"
    assert not (run / "model").exists()

    args = train_args(caption_file, tiny_clip_spec, run, steps)
    assert cli(args) == 2  # never silently restarts an unfinished run
    assert "--resume" in capsys.readouterr().err
    assert cli([*args, "--resume"]) == 0
    assert cli(train_args(caption_file, tiny_clip_spec, tmp_path / "reference", steps)) == 0

    expected, resumed = metrics(tmp_path / "reference"), metrics(run)
    assert sorted(resumed) == sorted(expected)
    for step in expected:
        assert resumed[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-4), step
    assert (run / "model" / "stylecap.json").exists()


def test_resume_refuses_a_different_config(tmp_path, caption_file, tiny_clip_spec):
    options = TrainOptions(out_dir=tmp_path / "run", steps=10, batch_size=8, checkpoint_every=5, progress=False)
    train_task("caption", caption_file, ModelChoices(clip=tiny_clip_spec), options)
    options.resume = True
    with pytest.raises(UsageError, match="different model config"):
        train_task("caption", caption_file, ModelChoices(clip=tiny_clip_spec, prefix_len=2), options)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_cpu_processes_train_together(tmp_path, caption_file, tiny_clip_spec):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "stylecap", *train_args(caption_file, tiny_clip_spec, out, 20)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("model saved") == 1
    checkpoint = latest_checkpoint(out)
    assert json.loads((checkpoint / "state.json").read_text())["processes"] == 2
    assert (checkpoint / "rng-0.json").exists() and (checkpoint / "rng-1.json").exists()
    assert (out / "model" / "stylecap.json").exists()
    assert metrics(out)[20] > 0
