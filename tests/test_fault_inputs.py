"""Bad inputs on the caption, eval and path side: every one gets one line and its documented exit code
(2 bad option, 3 bad input, 4 model, 6 partial, 130 interrupted), never a traceback. Real files,
real damaged files, real permission errors, real signals; property tests for the readers and for
path handling."""
from __future__ import annotations

import base64
import ctypes
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylecap.cli import main
from stylecap.core.images import find_images
from stylecap.core.tasks import ReadOptions, get_task
from stylecap.core.tasks.textfiles import iter_sentences, json_records
from stylecap.errors import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    InputError,
)
from stylecap.paths import asset
from stylecap.workflows.records import OutputFile, TerminalTable

pytestmark = pytest.mark.fault

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
CLIP = str(asset("tiny-clip.json"))
FAST = ["--beam", "1", "--max-length", "3", "--workers", "0", "--quiet"]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run(args: list, capsys) -> tuple[int, str, str]:
    """`stylecap ARGS` in this process: (exit code, stdout, stderr)."""
    try:
        main([os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])
        code = EXIT_OK
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _png(path: Path | bytes, colour="red", size=(24, 24)) -> Path | bytes:
    """A small PNG at ``path`` (bytes paths too: names that are not UTF-8)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(descriptor, buffer.getvalue())
    os.close(descriptor)
    return path


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny captioning model (random weights): what it writes does not matter here."""
    from stylecap.core.model import CloseConfig, build_model

    config = CloseConfig(clip=CLIP, clip_dim=32, lm="tiny-t5", lora=False, generation={"num_beams": 1})
    return build_model(config).save(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(autouse=True)
def _no_model_from_environment(monkeypatch):
    monkeypatch.delenv("STYLECAP_MODEL", raising=False)


# ----------------------------------------------------------------------------- the table

def _file(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _folder(tmp: Path, name: str = "empty") -> Path:
    (tmp / name).mkdir(exist_ok=True)
    return tmp / name


def _photo(tmp: Path) -> Path:
    return _png(tmp / "photo.png")


def _world_with_file(tmp: Path) -> Path:
    _file(tmp, "w/keep.txt", "something already here")
    return tmp / "w"


SNLI = FIXTURES / "snli" / "snli_1.0_dev.jsonl"
NOT_UTF8 = b"a red circle\nun cercle \xe9\xe9 rouge\n"
GARBAGE = bytes(range(256)) * 3

T = ["train", "--clip", CLIP, "--steps", "1", "--quiet"]  # + --data … --out …

# (id, argv builder (tmp, model) → list, exit code, words the one line must hold)
BAD_INPUTS = [
    # train: data
    ("train/missing data", lambda t, m: [*T, "--data", t / "nope.txt", "--out", t / "r"], EXIT_INPUT, "not found"),
    ("train/caption folder", lambda t, m: [*T, "--data", _folder(t), "--out", t / "r"], EXIT_INPUT, "in the folder"),
    ("train/vqa folder", lambda t, m: [*T, "--task", "vqa", "--data", _folder(t), "--out", t / "r"], EXIT_INPUT,
     "in the folder"),
    ("train/ve folder", lambda t, m: [*T, "--task", "ve", "--data", _folder(t), "--out", t / "r"], EXIT_INPUT,
     "in the folder"),
    ("train/news folder", lambda t, m: [*T, "--task", "news", "--data", _folder(t), "--out", t / "r"], EXIT_INPUT,
     "in the folder"),
    ("train/style folder", lambda t, m: [*T, "--task", "style", "--data", _folder(t), "--out", t / "r"], EXIT_INPUT,
     "folder"),
    ("train/SNLI as captions", lambda t, m: [*T, "--data", SNLI, "--out", t / "r"], EXIT_INPUT,
     "looks like SNLI: use --task ve"),
    ("train/VQA questions as captions", lambda t, m: [
        *T, "--data", FIXTURES / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json", "--out", t / "r"],
     EXIT_INPUT, "use --task vqa"),
    ("train/news records as captions", lambda t, m: [*T, "--data", FIXTURES / "news" / "data.json", "--out", t / "r"],
     EXIT_INPUT, "use --task news"),
    ("train/not UTF-8", lambda t, m: [*T, "--data", _file(t, "latin1.txt", NOT_UTF8), "--out", t / "r"], EXIT_INPUT,
     "line 2 is not UTF-8"),
    ("train/binary jsonl", lambda t, m: [*T, "--data", _file(t, "junk.jsonl", GARBAGE), "--out", t / "r"],
     EXIT_INPUT, "junk.jsonl:1"),
    ("train/binary json", lambda t, m: [*T, "--data", _file(t, "dataset_junk.json", GARBAGE), "--out", t / "r"],
     EXIT_INPUT, "not valid JSON"),
    ("train/empty captions", lambda t, m: [*T, "--data", _file(t, "empty.txt", "\n\n"), "--out", t / "r"],
     EXIT_INPUT, "no usable captions"),
    # train: options
    ("train/unknown task", lambda t, m: ["train", "--task", "poetry", "--data", SNLI], EXIT_USAGE, "unknown task"),
    ("train/noise nan", lambda t, m: [*T, "--noise", "nan", "--data", SNLI, "--out", t / "r"], EXIT_USAGE, "noise"),
    ("train/noise negative", lambda t, m: [*T, "--noise", "-1", "--data", SNLI, "--out", t / "r"], EXIT_USAGE, "noise"),
    ("train/lr zero", lambda t, m: [*T, "--lr", "0", "--data", SNLI, "--out", t / "r"], EXIT_USAGE, "--lr"),
    ("train/epochs inf", lambda t, m: ["train", "--epochs", "inf", "--data", SNLI, "--out", t / "r"], EXIT_USAGE,
     "--epochs"),
    ("train/batch size zero", lambda t, m: [*T, "--batch-size", "0", "--data", SNLI, "--out", t / "r"], EXIT_USAGE,
     "--batch-size"),
    ("train/mixed precision", lambda t, m: [*T, "--mixed-precision", "bogus", "--data", SNLI, "--out", t / "r"],
     EXIT_USAGE, "--mixed-precision"),
    ("train/mapper", lambda t, m: [*T, "--mapper", "x", "--data", SNLI, "--out", t / "r"], EXIT_USAGE, "--mapper"),
    ("train/adapter", lambda t, m: [*T, "--adapter", "x", "--data", SNLI, "--out", t / "r"], EXIT_USAGE, "--adapter"),
    ("train/prefix length", lambda t, m: [*T, "--prefix-len", "100000", "--data", SNLI, "--out", t / "r"],
     EXIT_USAGE, "--prefix-len"),
    ("train/caption mode", lambda t, m: [*T, "--mode", "several", "--data", SNLI, "--out", t / "r"], EXIT_USAGE,
     "--mode"),
    # eval
    ("eval/missing model", lambda t, m: ["eval", "--model", t / "nomodel", "--data", SNLI], EXIT_MODEL, "nomodel"),
    ("eval/missing data", lambda t, m: ["eval", "--model", m, "--data", t / "nope.json", "--quiet"], EXIT_INPUT,
     "not found"),
    ("eval/unknown input", lambda t, m: ["eval", "--model", m, "--data", SNLI, "--input", "sound"], EXIT_USAGE,
     "--input"),
    ("eval/folder without data", lambda t, m: ["eval", "--model", m, "--data", _folder(t), "--quiet"], EXIT_INPUT,
     "in the folder"),
    ("eval/SNLI for a captioner", lambda t, m: ["eval", "--model", m, "--data", SNLI, "--quiet"], EXIT_INPUT,
     "looks like SNLI"),
    ("eval/binary json", lambda t, m: ["eval", "--model", m, "--data", _file(t, "dataset_x.json", GARBAGE), "--quiet"],
     EXIT_INPUT, "not valid JSON"),
    # caption: paths
    ("caption/missing path", lambda t, m: ["caption", t / "nope.png", "--model", m, *FAST], EXIT_INPUT,
     "no such file or folder"),
    ("caption/no images", lambda t, m: ["caption", _folder(t), "--model", m, *FAST], EXIT_INPUT, "no images found"),
    ("caption/markup in a path", lambda t, m: ["caption", t / "x[/]y.png", "--model", m, *FAST], EXIT_INPUT,
     "x[/]y.png"),
    ("caption/style tag in a path", lambda t, m: ["caption", t / "[bold]b.png", "--model", m, *FAST], EXIT_INPUT,
     "[bold]b.png"),
    ("caption/escape in a path", lambda t, m: ["caption", t / "a\x1b[31mred.png", "--model", m, *FAST], EXIT_INPUT,
     "a\\x1b[31mred.png"),
    ("caption/missing model", lambda t, m: ["caption", _photo(t), "--model", t / "nomodel", *FAST], EXIT_MODEL,
     "nomodel"),
    # caption: options
    ("caption/device", lambda t, m: ["caption", _photo(t), "--model", m, "--device", "bogus"], EXIT_USAGE,
     "unknown device"),
    ("caption/temperature nan", lambda t, m: ["caption", _photo(t), "--model", m, "--sample", "--temperature", "nan"],
     EXIT_USAGE, "--temperature"),
    ("caption/temperature inf", lambda t, m: ["caption", _photo(t), "--model", m, "--sample", "--temperature", "inf"],
     EXIT_USAGE, "--temperature"),
    ("caption/top-p", lambda t, m: ["caption", _photo(t), "--model", m, "--sample", "--top-p", "2"], EXIT_USAGE,
     "--top-p"),
    ("caption/max length huge", lambda t, m: ["caption", _photo(t), "--model", m, "--max-length", "100000"],
     EXIT_USAGE, "--max-length"),
    ("caption/max length past the model", lambda t, m: ["caption", _photo(t), "--model", m, "--max-length", "1000"],
     EXIT_USAGE, "this model's limit"),
    ("caption/beam zero", lambda t, m: ["caption", _photo(t), "--model", m, "--beam", "0"], EXIT_USAGE, "--beam"),
    ("caption/no captions", lambda t, m: ["caption", _photo(t), "--model", m, "--num-captions", "0"], EXIT_USAGE,
     "--num-captions"),
    ("caption/rerank huge", lambda t, m: ["caption", _photo(t), "--model", m, "--rerank", "100000"], EXIT_USAGE,
     "--rerank 100000"),
    ("caption/rerank negative", lambda t, m: ["caption", _photo(t), "--model", m, "--rerank", "-1"], EXIT_USAGE,
     "--rerank"),
    ("caption/rerank one", lambda t, m: ["caption", _photo(t), "--model", m, "--rerank", "1"], EXIT_USAGE,
     "only sample"),
    ("caption/rerank fewer than kept", lambda t, m: ["caption", _photo(t), "--model", m, "--rerank", "2",
                                                     "--num-captions", "3"], EXIT_USAGE, "--num-captions 3"),
    ("caption/rerank with beams", lambda t, m: ["caption", _photo(t), "--model", m, "--rerank", "4", "--beam", "3"],
     EXIT_USAGE, "--beam 3"),
    ("eval/rerank huge", lambda t, m: ["eval", "--model", m, "--data", SNLI, "--rerank", "65"], EXIT_USAGE,
     "--rerank 65"),
    ("caption/batch size zero", lambda t, m: ["caption", _photo(t), "--model", m, "--batch-size", "0"], EXIT_USAGE,
     "--batch-size"),
    ("caption/max pixels zero", lambda t, m: ["caption", _photo(t), "--model", m, "--max-pixels", "0"], EXIT_USAGE,
     "--max-pixels"),
    ("caption/output format", lambda t, m: ["caption", _photo(t), "--model", m, "--out", t / "o.json"], EXIT_USAGE,
     ".jsonl or .csv"),
    ("caption/resume without output", lambda t, m: ["caption", _photo(t), "--model", m, "--resume"], EXIT_USAGE,
     "--resume needs --out"),
    ("caption/output exists", lambda t, m: ["caption", _photo(t), "--model", m, "--out",
                                            _file(t, "o.jsonl", '{"path": "x"}\n')], EXIT_USAGE, "--resume"),
    ("caption/question for a captioner", lambda t, m: ["caption", _photo(t), "--model", m, "--question", "why?"],
     EXIT_USAGE, "does not apply"),
    ("caption/resume into garbage", lambda t, m: ["caption", _photo(t), "--model", m, *FAST, "--resume", "--out",
                                                  _file(t, "o.jsonl", '{"path": "x"}\nnot json\n')], EXIT_INPUT,
     "o.jsonl:2"),
    # gap
    ("gap/missing pairs", lambda t, m: ["gap", "fit", "--pairs", t / "nope.jsonl", "--clip", CLIP, "--out", t / "g"],
     EXIT_INPUT, "nope.jsonl"),
    ("gap/binary pairs", lambda t, m: ["gap", "analyze", "--pairs", _file(t, "p.jsonl", GARBAGE), "--clip", CLIP,
                                       "--out", t / "g"], EXIT_INPUT, "p.jsonl"),
    ("gap/unknown adapter", lambda t, m: ["gap", "fit", "--pairs", SNLI, "--clip", CLIP, "--adapters", "bogus",
                                          "--out", t / "g"], EXIT_USAGE, "bogus"),
    ("gap/bad sigma", lambda t, m: ["gap", "sweep", "--train", SNLI, "--test", SNLI, "--sigmas", "0,x"], EXIT_USAGE,
     "noise"),
    # world
    ("world/size", lambda t, m: ["world", "build", "--out", t / "w", "--size", "huge"], EXIT_USAGE, "huge"),
    ("world/split count", lambda t, m: ["world", "build", "--out", t / "w", "--split", "clip=abc"], EXIT_USAGE,
     "--split"),
    ("world/clip without world", lambda t, m: ["world", "clip"], EXIT_USAGE, "--world"),
    ("world/folder in use", lambda t, m: ["world", "build", "--out", _world_with_file(t), "--size", "small"],
     EXIT_USAGE, "--force"),
    # demo
    ("demo/seeds", lambda t, m: ["demo", "--out", t / "d", "--seeds", "a,b"], EXIT_USAGE, "--seeds"),
    ("demo/voice", lambda t, m: ["demo", "--out", t / "d", "--voice", "bogus"], EXIT_USAGE, "bogus"),
    ("demo/tasks", lambda t, m: ["demo", "--out", t / "d", "--tasks", "poetry"], EXIT_USAGE, "poetry"),
    ("demo/no steps", lambda t, m: ["demo", "--out", t / "d", "--steps", "0"], EXIT_USAGE, "--steps"),
    ("demo/damaged world", lambda t, m: ["demo", "--out", t / "d", "--world", _file(t, "w/world.json", "{not").parent],
     EXIT_INPUT, "world.json"),
    ("demo/world is a file", lambda t, m: ["demo", "--out", t / "d", "--world", _file(t, "w", "x")], EXIT_INPUT,
     "is a file"),
]


@pytest.mark.parametrize("build, code, words", [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_gets_one_line_and_its_exit_code(build, code, words, model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STYLECAP_CACHE", str(tmp_path / "cache"))
    args = build(tmp_path, model_dir)
    got, _, err = _run(args, capsys)
    assert "Traceback" not in err and "\x1b" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert lines and lines[-1].startswith("error:") and words in lines[-1], err
    assert sum(line.startswith("error:") for line in lines) == 1, err


def test_the_table_covers_every_command_with_enough_rows():
    commands = {row[0].split("/")[0] for row in BAD_INPUTS}
    assert commands == {"train", "eval", "caption", "gap", "world", "demo"} and len(BAD_INPUTS) >= 40


# ----------------------------------------------------------------------------- file names

@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_names_that_are_not_utf8_are_captioned_kept_exactly_and_resumed(suffix, model_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    odd = os.fsencode(folder) + b"/caf\xe9-\xff.png"  # Latin-1 bytes: not UTF-8
    for name in (odd, os.fsencode(folder / "plain.png"), os.fsencode(folder) + b"/tab\there.png"):
        _png(name)
    out, page = tmp_path / f"captions{suffix}", tmp_path / "gallery.html"
    code, _, err = _run(["caption", folder, "--model", model_dir, "--out", out, "--html", page, *FAST], capsys)
    assert code == EXIT_OK and "Traceback" not in err, err
    kept = list(OutputFile(out, resume=True).read())  # the reader gives the exact paths back
    assert sorted(os.fsencode(r["path"]) for r in kept) == sorted(os.fsencode(p) for p in folder.iterdir())
    out.read_text(encoding="utf-8")  # the file is UTF-8 text throughout
    if suffix == ".jsonl":  # the name as text, its bytes exactly
        stored = next(r for r in _records(out) if "path_b64" in r)
        assert stored["path"].endswith("/caf\\xe9-\\xff.png") and base64.b64decode(stored["path_b64"]) == odd
    assert page.is_file() and "caf\\xe9-\\xff.png" in page.read_text(encoding="utf-8")

    code, _, err = _run(["caption", folder, "--model", model_dir, "--out", out, "--resume", *FAST], capsys)
    assert code == EXIT_OK and "3 already done" in err, err
    assert len(list(OutputFile(out, resume=True).read())) == 3  # recognised on resume: nothing captioned twice


def test_the_same_file_spelled_differently_gets_one_record(model_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        _png(folder / name)
    os.symlink(folder / "a.png", folder / "link-to-a.png")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "c.jsonl"
    code, _, err = _run(["caption", "photos", "photos/a.png", "./photos/a.png", folder / "a.png", "photos/../photos",
                         "--model", model_dir, "--out", out, *FAST], capsys)
    assert code == EXIT_OK, err
    paths = [r["path"] for r in _records(out)]
    assert sorted(paths) == [str(folder / "a.png"), str(folder / "b.png")]  # stored absolute, once each

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # resumed from another working folder, spelled another way
    code, _, err = _run(["caption", "../photos/link-to-a.png", "../photos", "--model", model_dir, "--out", out,
                         "--resume", *FAST], capsys)
    assert code == EXIT_OK and "captioned 0 images" in err, err
    assert len(_records(out)) == 2


def test_markup_and_control_characters_in_names_are_shown_literally(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # wide enough that no name is folded in the table
    folder = tmp_path / "x[" / "in[bold]"
    folder.mkdir(parents=True)
    _png(folder / "[bold]b.png")
    _png(folder / "esc\x1b[31mred.png")
    (folder / "]y [red]bad.png").write_text("not an image")  # a failure: its line names it
    out = tmp_path / "out[/]" / "c.jsonl"  # the summary names the output file
    code, stdout, err = _run(["caption", folder, "--model", model_dir, "--out", out, "--beam", "1",
                              "--max-length", "3", "--workers", "0"], capsys)
    assert code == EXIT_PARTIAL and "Traceback" not in err, err
    shown = stdout + err
    assert "\x1b" not in shown  # no escape sequence reaches the terminal
    assert "esc\\x1b[31mred.png" in shown and "[bold]b.png" in shown  # the table shows the names as they are
    assert "]y [red]bad.png: not an image" in err and "out[/]" in err


def test_the_streamed_table_keeps_one_line_and_three_fields_per_caption():
    from rich.console import Console

    from stylecap.workflows.records import TABLE_ROWS

    console = Console(file=io.StringIO(), width=100)
    table = TerminalTable(console, stream_overflow=True)
    table.write([{"path": f"odd\t\x1b[2J{i}\udcff.png", "caption": "two\nlines", "score": 0.5, "error": ""}
                 for i in range(TABLE_ROWS + 2)])
    lines = console.file.getvalue().splitlines()
    assert len(lines) == TABLE_ROWS + 2 and all(line.count("\t") == 2 and "\x1b" not in line for line in lines)
    assert lines[0] == "odd\\t\\x1b[2J0\\xff.png\ttwo\\nlines\t0.500"  # \\xff: the name's byte 0xff


def test_the_metrics_table_shows_names_literally():
    from rich.console import Console

    from stylecap.workflows.evaluate import metrics_table

    report = {"task": "caption", "split": "[bold]mine", "input": "images", "items": 2, "scores": {"CIDEr-D": 0.5},
              "skipped": {"missing images": 1}, "notes": ["a [red]note\x1b[0m"]}
    console = Console(file=io.StringIO(), width=120)
    console.print(metrics_table(report))
    text = console.file.getvalue()
    assert "[bold]mine" in text and "a [red]note\\x1b[0m" in text


# ----------------------------------------------------------------------------- options with no upper bound

def test_decoding_processes_never_outnumber_the_cores_or_the_batches():
    from stylecap.core.images import usable_cores, worker_count

    for requested, files, batch in [(1000, 1, 32), (1000, 10_000, 2), (0, 50, 4), (None, 3, 1), (2, 0, 8)]:
        workers, items = worker_count(requested, iter(range(files)), batch)
        assert 0 <= workers <= min(usable_cores(), -(-files // batch))
        assert requested is None or workers <= requested
        assert list(items) == list(range(files))  # the look-ahead gives every item back, in order


# ----------------------------------------------------------------------------- permissions

def _without_permission_override():
    """Drop root's power to read past file permissions, before a child process starts, so the
    permissions the test sets are enforced for real (a root shell reads a mode-000 file)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from the bounding set
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "cannot drop the capability")


def _as_ordinary_user(args: list, cwd: Path) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        try:
            subprocess.run(["true"], preexec_fn=_without_permission_override, check=True)
        except (OSError, subprocess.SubprocessError):
            pytest.skip("running as root without the right to drop capabilities: permissions cannot be enforced")
    return subprocess.run([sys.executable, "-m", "stylecap", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, preexec_fn=_without_permission_override if os.geteuid() == 0 else None,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


@pytest.fixture
def locked_photos(tmp_path):
    """A folder with one good image, a folder nobody may open, one that may be listed but not entered,
    and a file nobody may read; permissions restored afterwards so the folder can be removed."""
    root = tmp_path / "photos"
    for folder in ("locked", "listed"):
        (root / folder).mkdir(parents=True)
    for name in ("ok.png", "locked/a.png", "listed/b.png", "secret.png"):
        _png(root / name)
    modes = {root / "locked": 0o000, root / "listed": 0o644, root / "secret.png": 0o000}
    for path, mode in modes.items():
        path.chmod(mode)
    yield root
    for path in modes:
        path.chmod(0o755)


def test_unreadable_files_inside_folders_are_failure_records(locked_photos, model_dir, tmp_path):
    out = tmp_path / "c.jsonl"
    done = _as_ordinary_user(["caption", "photos", "--model", model_dir, "--out", out, *FAST], tmp_path)
    assert done.returncode == EXIT_PARTIAL and "Traceback" not in done.stderr, done.stderr
    errors = {Path(r["path"]).relative_to(locked_photos).as_posix(): r["error"] for r in _records(out)}
    assert errors == {"ok.png": "", "locked": "cannot read folder: permission denied",
                      "listed/b.png": "permission denied", "secret.png": "permission denied"}


@pytest.mark.parametrize("given, words", [("photos/secret.png", "cannot read this file"),
                                          ("photos/locked/a.png", "cannot reach it"),
                                          ("photos/locked", "cannot read this folder")])
def test_unreadable_paths_given_directly_exit_3(given, words, locked_photos, model_dir, tmp_path):
    done = _as_ordinary_user(["caption", given, "--model", model_dir, *FAST], tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_INPUT and len(lines) == 1 and words in lines[0] and given in lines[0], done.stderr


def test_unreadable_data_files_exit_3(locked_photos, tmp_path):
    (tmp_path / "captions.txt").write_text("a red circle\n")
    (tmp_path / "captions.txt").chmod(0o000)
    done = _as_ordinary_user(["train", "--data", "captions.txt", "--clip", CLIP, "--out", "run", "--quiet"], tmp_path)
    assert done.returncode == EXIT_INPUT and "Traceback" not in done.stderr, done.stderr
    assert "captions.txt" in done.stderr and "permission denied" in done.stderr


# ----------------------------------------------------------------------------- exit codes that agree

def test_missing_java_is_a_missing_input_exit_3(tmp_path, monkeypatch):
    from stylecap.core.metrics import caption_scores

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no java on it
    with pytest.raises(InputError, match="Java") as raised:
        caption_scores({"1": "a dog"}, {"1": ["a dog"]}, meteor=False, spice=False)
    assert raised.value.exit_code == EXIT_INPUT


def test_a_folder_as_data_is_the_same_mistake_for_every_task(tmp_path):
    for task in ("caption", "vqa", "ve", "news", "style"):
        with pytest.raises(InputError) as raised:
            get_task(task).read(tmp_path, ReadOptions(split="train"))
        assert raised.value.exit_code == EXIT_INPUT, task


# ----------------------------------------------------------------------------- Ctrl-C

def _interruptible() -> None:
    """Ctrl-C as in a terminal: a shell that starts jobs in the background (CI runners, `cmd &`) hands
    them SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(process: subprocess.Popen, ready, deadline_s: float = 180) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and process.poll() is None and not ready():
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGINT)


def test_ctrl_c_in_caption_says_to_add_resume_and_resume_finishes(model_dir, tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(150):
        _png(folder / f"{index:03d}.png", (index, 0, 0), (16, 16))
    out = tmp_path / "c.jsonl"
    args = ["caption", str(folder), "--model", str(model_dir), "--out", str(out), "--batch-size", "2",
            "--workers", "1", "--beam", "1", "--max-length", "8", "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "stylecap", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=_interruptible)
    _interrupt_when(process, lambda: out.exists() and out.read_bytes().count(b"\n") >= 4)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == EXIT_INTERRUPTED and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (f"interrupted: the records made so far are in {out}; add --resume to the "
                                            "same command to caption the rest")
    assert 4 <= len(_records(out)) < 150
    code, _, err = _run([*args, "--resume"], capsys)
    assert code == EXIT_OK, err
    paths = [r["path"] for r in _records(out)]
    assert len(paths) == len(set(paths)) == 150


def test_ctrl_c_elsewhere_prints_the_documented_line(tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle left of a blue square\n" * 64)
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "stylecap", "train", "--data", str(captions), "--clip", CLIP,
                                "--out", str(run), "--steps", "100000", "--batch-size", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=_interruptible)
    _interrupt_when(process, lambda: (run / "metrics.jsonl").exists())
    err = process.communicate(timeout=120)[1]
    assert process.returncode == EXIT_INTERRUPTED and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted: work done so far is saved; to continue, run the "
                                                   "same command again (with --resume")


# ----------------------------------------------------------------------------- eval names what it could not use

def test_eval_names_the_missing_images_and_counts_images_not_pairs(tmp_path, capsys):
    from stylecap.core.model import CloseConfig, build_model

    model = build_model(CloseConfig(clip=CLIP, clip_dim=32, lm="tiny-t5", lora=False, task="ve", max_target_len=3,
                                    generation={"num_beams": 1})).save(tmp_path / "ve-model")
    images = tmp_path / "flickr"
    images.mkdir()
    _png(images / "111.jpg")
    pairs = [("111", "entailment"), ("111", "neutral"), ("222", "entailment"), ("222", "neutral"),
             ("222", "contradiction")]  # three pairs on one missing picture
    data = tmp_path / "snli_ve_test.jsonl"
    data.write_text("".join(json.dumps({"Flickr30K_ID": image, "gold_label": label, "sentence2": "a thing",
                                        "pairID": f"{image}#{i}"}) + "\n" for i, (image, label) in enumerate(pairs)))
    out = tmp_path / "eval"
    code, _, err = _run(["eval", "--model", model, "--data", data, "--images", images, "--out", out, "--quiet"], capsys)
    assert code == EXIT_PARTIAL and "Traceback" not in err, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped"] == {"missing images": 1} and metrics["items"] == 2
    assert metrics["failures"] == [{"image": str(images / "222.jpg"), "reason": "missing"}]
    assert f"missing: {images / '222.jpg'}" in err.splitlines()


# ----------------------------------------------------------------------------- properties

@PROPERTY
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".txt", ".jsonl"]))
@example(data=b"ok\n\xff\xfe\n", suffix=".txt")
@example(data=b'{"caption": 1' + b"9" * 5000 + b"}\n", suffix=".jsonl")
@example(data=b"[" * 5000 + b"\n", suffix=".jsonl")
@example(data=b'{"sentence1": "a", "sentence2": "b"}\n', suffix=".jsonl")
def test_any_bytes_in_a_caption_file_read_or_give_one_input_error(data, suffix, tmp_path):
    path = tmp_path / f"captions{suffix}"
    path.write_bytes(data)
    try:
        sentences = list(iter_sentences(path))
        examples = get_task("caption").read(path, ReadOptions())
    except InputError as exc:
        assert exc.exit_code == EXIT_INPUT and "\n" not in exc.line() and str(path) in exc.line()
        return
    assert sentences and all(text == text.strip() and text for _, text in sentences)
    assert [ex.target for ex in examples] == [text for _, text in sentences]


@PROPERTY
@given(data=st.binary(max_size=400))
@example(data=b'{"images": 3}')
@example(data=b'{"questions": []}')
@example(data=b"1" * 5000)
def test_any_bytes_in_a_json_dataset_read_or_give_one_input_error(data, tmp_path):
    path = tmp_path / "dataset_any.json"
    path.write_bytes(data)
    try:
        records = json_records(path, "images")
        get_task("caption").read(path, ReadOptions())
    except InputError as exc:
        assert exc.exit_code == EXIT_INPUT and "\n" not in exc.line()
        return
    assert isinstance(records, list)


FILE_NAMES = st.binary(min_size=1, max_size=120).filter(
    lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b".."))


@PROPERTY
@given(name=FILE_NAMES)
@example(name=b"caf\xe9.png")
@example(name=b"\xed\xa0\x80.png")  # a UTF-8-encoded surrogate: not valid UTF-8 either
@example(name=b"line\nbreak\x1b[31m.png")
def test_any_file_name_is_stored_as_text_and_read_back_exactly(name, tmp_path):
    from stylecap.core.images import file_key, is_exact_text, path_text
    from stylecap.errors import printable

    folder = os.fsencode(tmp_path / "names")
    shutil.rmtree(folder, ignore_errors=True)
    os.mkdir(folder)
    path = os.fsdecode(os.path.join(folder, name))
    _png(os.fsencode(path))
    output = OutputFile(Path(os.fsdecode(folder)) / "o.jsonl")
    output.write([{"path": path, "caption": "c", "score": 0.5, "model": "m", "error": ""}])
    output.close()
    stored = output.path.read_bytes().decode("utf-8")  # always valid UTF-8
    assert is_exact_text(path) == ("path_b64" not in stored)
    assert [r["path"] for r in output.read()] == [path]
    assert output.done_keys() == {file_key(path)}
    shown = printable(path_text(path))
    assert shown.encode("utf-8") and not any(c < " " or c == "\x7f" for c in shown)


@PROPERTY
@given(name=FILE_NAMES)
def test_a_file_is_found_once_however_it_is_named(name, tmp_path, monkeypatch):
    from stylecap.core.images import file_key

    folder = tmp_path / "walk"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    file = os.fsdecode(os.path.join(os.fsencode(folder), name + b".png"))
    _png(os.fsencode(file))
    monkeypatch.chdir(tmp_path)
    relative = Path("walk") / os.path.basename(file)
    found = list(find_images([folder, Path(file), relative, Path(".") / relative, Path("walk/../walk")]))
    assert found == [Path(file)]
    assert file_key(relative) == file_key(file) == file_key(Path("walk/..") / "walk" / os.path.basename(file))


@PROPERTY
@given(text=st.text(alphabet=st.characters(), max_size=60))
@example(text="\udcff\x1b[31m\u202e\n")
def test_what_reaches_the_terminal_is_printable_and_stays_so(text):
    from stylecap.errors import printable

    shown = printable(text)
    shown.encode("utf-8")  # never raises: no lone surrogate is left
    assert printable(shown) == shown
    assert not any(c in "\x1b\n\r\t\x7f" or "\ud800" <= c <= "\udfff" for c in shown)
