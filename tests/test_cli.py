"""The installed command as a user meets it: help, train → caption on CPU, one-line errors and exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "stylecap", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "caption", "generate", "corpus", "eval", "gap", "world", "bench"):
        assert command in done.stdout


def test_train_then_caption_on_cpu(tmp_path, caption_file, tiny_clip_spec, capsys, cli):
    out = tmp_path / "run"
    assert cli(["train", "--data", str(caption_file), "--clip", tiny_clip_spec, "--out", str(out),
                "--steps", "8", "--batch-size", "8", "--quiet"]) == 0
    assert "model saved to" in capsys.readouterr().out
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, colour in enumerate([(220, 30, 30), (30, 30, 220)]):
        Image.new("RGB", (48, 48), colour).save(photos / f"{index}.png")
    records = tmp_path / "captions.jsonl"
    assert cli(["caption", str(photos), "--model", str(out / "model"), "--out", str(records), "--quiet",
                "--workers", "0", "--max-length", "6"]) == 0
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in rows) == ["0.png", "1.png"]
    assert all(r["error"] == "" and 0 < r["score"] <= 1 for r in rows)


def _bad_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"caption": "a red circle"}\n{"caption": \n')
    return path


def _photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (0, 200, 0)).save(path)
    return path


def _good_txt(tmp_path):
    path = tmp_path / "good.txt"
    path.write_text("a red circle\n")
    return path


@pytest.mark.parametrize("make_args, code, words", [
    (lambda t, c: ["train", "--data", str(t / "missing.txt"), "--clip", c, "--out", str(t / "r")], 3,
     ["data file not found", "missing.txt"]),
    (lambda t, c: ["train", "--data", str(_bad_jsonl(t)), "--clip", c, "--out", str(t / "r")], 3,
     ["malformed JSON", "bad.jsonl:2"]),
    (lambda t, c: ["train", "--data", str(_good_txt(t)), "--clip", "NoSuchClip:openai", "--out", str(t / "r")], 4,
     ["unknown CLIP model"]),
    (lambda t, c: ["caption", str(_photo(t)), "--model", str(t)], 4, ["no stylecap.json"]),
    (lambda t, c: ["train", "--task", "poetry", "--data", "x"], 2, ["unknown task"]),
])
def test_user_errors_are_one_line_with_a_documented_code(tmp_path, tiny_clip_spec, capsys, cli, make_args, code,
                                                        words):
    assert cli(make_args(tmp_path, tiny_clip_spec)) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    for word in words:
        assert word in err


def test_unknown_option_is_a_usage_error(capsys, cli):
    assert cli(["train", "--data", "x", "--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err
