"""`stylecap caption` on real files: every format, every kind of bad file, outputs, resume after SIGKILL."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from PIL import Image

from stylecap.core.images import Failure, ImageError, find_images, iter_image_vectors, load_image
from stylecap.errors import EXIT_INPUT, EXIT_MODEL, EXIT_PARTIAL, EXIT_USAGE, UsageError
from stylecap.options import Decoding
from stylecap.paths import asset
from stylecap.workflows.caption import Captioner, TaskInput
from stylecap.workflows.records import TABLE_ROWS, TerminalTable, drop_partial_line

FAST = ["--beam", "1", "--max-length", "4", "--quiet"]  # decoding work is not what these tests are about


# ----------------------------------------------------------------------------- fixtures: a model, images

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread, and two contend badly on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from stylecap.core.model import CloseConfig, build_model

    config = CloseConfig(clip=str(asset("tiny-clip.json")), clip_dim=32, lm="tiny-t5", lora=False)
    return build_model(config).save(tmp_path_factory.mktemp("model") / "model")


def _photo(size=(64, 48), seed=0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def png_bomb(path: Path, side: int = 100_000) -> Path:
    """A tiny file whose header promises side × side pixels (what a decompression bomb looks like)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def make_good_images(folder: Path) -> list[Path]:
    """One image of every supported format and awkward mode."""
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    rotated = _photo((40, 20), 1)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated.save(folder / "rotated.jpg", exif=exif)
    _photo(seed=2).convert("CMYK").save(folder / "cmyk.jpeg")
    rgba = _photo(seed=3).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    palette = _photo(seed=4).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(folder / "sub" / "palette.png", transparency=0)
    _photo(seed=5).save(folder / "sub" / "photo.webp")
    _photo(seed=6).save(folder / "sub" / "photo.bmp")
    _photo(seed=7).save(folder / "sub" / "photo.tiff")
    frames = [_photo(seed=8).convert("P"), _photo(seed=9).convert("P")]
    frames[0].save(folder / "sub" / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("I;16", (32, 32), 40000).save(folder / "grey16.png")
    _photo(seed=10).convert("L").save(folder / "grey.PNG")
    return sorted(p for p in folder.rglob("*") if p.is_file())


BAD_REASONS = {
    "empty.jpg": "empty file",
    "notes.png": "not an image",
    "truncated.jpg": "corrupt or truncated",
    "corrupt.png": "corrupt or truncated",
    "bomb.png": "decompression-bomb",
    "gone.jpg": "broken symbolic link",
}


def make_bad_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not a picture\n")
    buffer = io.BytesIO()
    _photo((128, 96), 11).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    _photo((64, 64), 12).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[80:200] = b"\x00" * 120  # inside the image data: checksums and the zlib stream break
    (folder / "corrupt.png").write_bytes(bytes(data))
    png_bomb(folder / "bomb.png")
    os.symlink(folder / "missing.jpg", folder / "gone.jpg")
    (folder / "readme.txt").write_text("not an image suffix: ignored inside folders\n")
    return {str(folder / name): reason for name, reason in BAD_REASONS.items()}


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    good = make_good_images(folder / "good")
    bad = make_bad_files(folder / "bad")
    return folder, good, bad


def argv(*args) -> list[str]:
    """Command-line words from paths and strings, for the ``cli`` fixture."""
    return [str(a) for a in args]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- loading images

def test_images_are_oriented_and_flattened_as_a_person_sees_them(photo_folder):
    _, good, _ = photo_folder
    by_name = {p.name: p for p in good}
    assert load_image(by_name["rotated.jpg"]).size == (20, 40)  # EXIF orientation applied
    alpha = load_image(by_name["alpha.png"])
    assert alpha.mode == "RGB"
    transparent_index_colour = load_image(by_name["palette.png"]).getcolors(10_000)
    assert any(colour == (255, 255, 255) for _, colour in transparent_index_colour)  # transparency → white
    grey = load_image(by_name["grey16.png"]).getpixel((0, 0))
    assert grey == (156, 156, 156)  # 40000 / 256, not clipped to white
    gif = Image.open(by_name["anim.gif"])
    assert gif.n_frames == 2 and load_image(by_name["anim.gif"]).size == (64, 48)


def test_bad_files_fail_with_their_reason(photo_folder, tmp_path):
    _, _, bad = photo_folder
    for path, reason in bad.items():
        if Path(path).name == "gone.jpg":
            continue  # found by the walk, never opened
        with pytest.raises(ImageError, match=reason):
            load_image(Path(path))
    small = tmp_path / "small.png"
    _photo((20, 20)).save(small)
    with pytest.raises(ImageError, match="--max-pixels"):  # over the limit, under Pillow's own error: still refused
        load_image(small, max_pixels=300)
    assert load_image(small, max_pixels=400).size == (20, 20)


def test_folders_are_walked_lazily_in_sorted_order(photo_folder, tmp_path, monkeypatch):
    folder, good, bad = photo_folder
    walk = find_images([folder])
    assert iter(walk) is walk  # a generator, not a list
    items = list(walk)
    paths = [item for item in items if isinstance(item, Path)]
    assert paths == sorted(paths, key=lambda p: [part for part in p.parts])
    assert set(paths) == set(good) | {Path(p) for p in bad if not p.endswith("gone.jpg")}
    failures = [item for item in items if isinstance(item, Failure)]
    assert [(Path(f.path).name, f.reason) for f in failures] == [("gone.jpg", "broken symbolic link")]

    locked = tmp_path / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path):  # tests run as root, which reads any folder: simulate the permission error
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert list(find_images([locked])) == [Failure(str(locked), "cannot read folder: permission denied")]


def test_image_vectors_stream_from_an_endless_generator(photo_folder):
    """Nothing is listed up front: an infinite input yields batches as soon as they are full."""
    _, good, _ = photo_folder
    encoder = Captioner_encoder()

    def endless():
        while True:
            yield from good[:3]
            yield Failure("nowhere.jpg", "made up")

    batches = iter_image_vectors(encoder, endless(), batch_size=4, num_workers=1)
    first, second = next(batches), next(batches)
    batches.close()
    assert len(first.paths) == 3 and first.failures == [Failure("nowhere.jpg", "made up")]
    assert first.vectors.shape == (3, encoder.dim)
    assert torch.allclose(first.vectors.norm(dim=-1), torch.ones(3), atol=1e-4)
    assert len(second.paths) + len(second.failures) == 4


def Captioner_encoder():
    from stylecap.core.encoders import load_clip

    return load_clip(str(asset("tiny-clip.json")), "cpu")


# ----------------------------------------------------------------------------- the command

def test_every_good_image_captioned_every_bad_one_recorded(photo_folder, model_dir, tmp_path, cli):
    folder, good, bad = photo_folder
    out, page = tmp_path / "captions.jsonl", tmp_path / "gallery" / "index.html"
    code = cli(argv("caption", folder, "--model", model_dir, "--out", out, "--html", page, "--workers", "1",
                    "--batch-size", "4", *FAST))
    assert code == EXIT_PARTIAL
    records = read_jsonl(out)
    assert all(set(r) == {"path", "caption", "score", "model", "error"} for r in records)
    captioned = {r["path"]: r for r in records if not r["error"]}
    failed = {r["path"]: r["error"] for r in records if r["error"]}
    assert set(captioned) == {str(p) for p in good}
    # a random-weight model may write an empty caption; that is still its caption, with a score
    assert all(isinstance(r["caption"], str) and 0 < r["score"] <= 1 for r in captioned.values())
    assert set(failed) == set(bad)
    for path, reason in bad.items():
        assert reason in failed[path], (path, failed[path])
    assert len(records) == len(good) + len(bad)  # one record each, nothing twice

    root = ET.parse(page).getroot()  # well-formed: parses strictly as XML
    sources = {(page.parent / unquote(img.get("src"))).resolve() for img in root.iter("img")}
    assert sources == {p.resolve() for p in good}
    assert all(s.exists() for s in sources)
    text = page.read_text()
    assert all(Path(p).name in text for p in bad)  # failures are listed (without an <img>)
    assert not page.with_name("index.html.part").exists()


def test_csv_output_with_several_captions_per_image(photo_folder, model_dir, tmp_path, cli):
    _, good, _ = photo_folder
    out = tmp_path / "captions.csv"
    code = cli(argv("caption", *good[:3], "--model", model_dir, "--out", out, "--num-captions", "2",
                    "--workers", "0", "--max-length", "4", "--quiet"))
    assert code == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "caption", "score", "model", "error", "path_b64"]  # path_b64: non-UTF-8 names
    assert [r["path"] for r in rows] == [str(p) for p in good[:3] for _ in range(2)]
    scores = [float(r["score"]) for r in rows]
    assert all(scores[i] >= scores[i + 1] for i in range(0, len(scores), 2))  # best first
    assert all(r["model"] == str(model_dir) and r["error"] == "" for r in rows)


def test_resume_after_sigkill_captions_each_image_exactly_once(model_dir, tmp_path, cli):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(60):
        _photo((48, 32), index).save(folder / f"img-{index:03d}.png")
    out = tmp_path / "captions.jsonl"
    args = [sys.executable, "-m", "stylecap", "caption", str(folder), "--model", str(model_dir), "--out", str(out),
            "--batch-size", "2", "--workers", "0", "--beam", "1", "--max-length", "12"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 4:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = out.read_text().count("\n")
    assert 4 <= done_before < 60  # killed mid-run
    with open(out, "a") as handle:  # as if the kill had landed in the middle of a write
        handle.write('{"path": "' + str(folder / "img-0"))

    assert cli(argv("caption", folder, "--model", model_dir, "--out", out, "--resume", *FAST)) == 0
    paths = [r["path"] for r in read_jsonl(out)]
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir())
    assert len(paths) == len(set(paths)) == 60
    assert cli(argv("caption", folder, "--model", model_dir, "--out", out, "--resume", *FAST)) == 0
    assert len(read_jsonl(out)) == 60  # nothing left to do, nothing added


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_continues_a_file_and_its_gallery(suffix, photo_folder, model_dir, tmp_path, cli):
    _, good, _ = photo_folder
    out, page = tmp_path / f"c{suffix}", tmp_path / "g.html"
    assert cli(argv("caption", *good[:2], "--model", model_dir, "--out", out, *FAST)) == 0
    assert cli(argv("caption", *good[:4], "--model", model_dir, "--out", out, "--resume", "--html", page, *FAST)) == 0
    assert len(list(ET.parse(page).getroot().iter("img"))) == 4  # the earlier records too
    with open(out, newline="") as handle:
        records = list(csv.DictReader(handle)) if suffix == ".csv" else read_jsonl(out)
    assert [r["path"] for r in records] == [str(p) for p in good[:4]]


@pytest.mark.parametrize("case, code, message", [
    ("missing path", EXIT_INPUT, "no such file or folder"),
    ("no images", EXIT_INPUT, "no images found"),
    ("no model", EXIT_MODEL, "stylecap train"),
    ("incomplete model", EXIT_MODEL, "incomplete"),
    ("other version", EXIT_MODEL, "not readable by this stylecap"),
    ("existing output", EXIT_USAGE, "--resume"),
    ("bad output format", EXIT_USAGE, ".jsonl or .csv"),
])
def test_errors_are_one_line_with_their_exit_code(case, code, message, photo_folder, model_dir, tmp_path, capsys,
                                                  monkeypatch, cli):
    import shutil

    _, good, _ = photo_folder
    monkeypatch.delenv("STYLECAP_MODEL", raising=False)
    args = ["caption", good[0], "--model", model_dir, *FAST]
    if case == "missing path":
        args[1] = tmp_path / "nope"
    elif case == "no images":
        (tmp_path / "readme.txt").write_text("hi")
        args[1] = tmp_path
    elif case == "no model":  # plain captioning falls back to the shipped captioner; a question needs a VQA model
        monkeypatch.setenv("STYLECAP_CACHE", str(tmp_path / "fresh-cache"))  # nothing trained on this machine
        args = ["caption", good[0], "--question", "what is it?", *FAST]
    elif case in ("incomplete model", "other version"):
        broken = tmp_path / "model"
        shutil.copytree(model_dir, broken)
        if case == "incomplete model":
            (broken / "mapper.safetensors").unlink()
        else:
            meta = json.loads((broken / "stylecap.json").read_text())
            (broken / "stylecap.json").write_text(json.dumps({**meta, "format_version": 99}))
        args[3] = broken
    elif case == "existing output":
        (tmp_path / "o.jsonl").write_text('{"path": "x"}\n')
        args += ["--out", tmp_path / "o.jsonl"]
    else:
        args += ["--out", tmp_path / "o.json"]
    assert cli(argv(*args)) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


# ----------------------------------------------------------------------------- pieces

def test_task_inputs_match_the_model_task(tmp_path):
    assert TaskInput().text_for("caption") is None
    assert TaskInput(question="what colour?").text_for("vqa") == "what colour?"
    with pytest.raises(UsageError, match="--question"):
        TaskInput().text_for("vqa")
    with pytest.raises(UsageError, match="does not apply"):
        TaskInput(question="why?").text_for("caption")
    with pytest.raises(UsageError, match="does not apply"):
        TaskInput(hypothesis="a dog").text_for("vqa")
    assert TaskInput(hypothesis="a dog").text_for("ve") == "a dog"
    article = tmp_path / "article.txt"
    article.write_text("  The mayor opened the bridge.\n")
    assert TaskInput(context=article).text_for("news") == "The mayor opened the bridge."


def test_decoding_keeps_enough_beams_for_the_captions_asked():
    assert Decoding(num_return_sequences=3).generate_kwargs(default_beams=1)["num_beams"] == 3
    assert Decoding(num_beams=5, num_return_sequences=2).generate_kwargs()["num_beams"] == 5
    with pytest.raises(UsageError):
        Decoding(do_sample=True, temperature=0).check()


def test_question_reaches_the_model(model_dir, photo_folder, monkeypatch):
    _, good, _ = photo_folder
    captioner = Captioner.load(model_dir, "cpu")
    seen = []
    generate = captioner.model.generate
    monkeypatch.setattr(captioner.model, "generate", lambda vecs, texts, **kw: seen.append(texts) or generate(vecs, texts, **kw))
    vectors = Captioner_encoder().encode_images(good[:2])
    assert len(captioner.caption(vectors, Decoding(num_beams=1, max_new_tokens=3), "what is in it?")) == 2
    assert len(captioner.caption(vectors, Decoding(num_beams=1, max_new_tokens=3))) == 2
    assert seen == [["what is in it?"] * 2, None]


def test_bf16_language_model_reads_the_fp32_mapper(model_dir):
    """What a GPU run does (LM in bf16, mapper in fp32), checked on the CPU."""
    captioner = Captioner.load(model_dir, "cpu")
    captioner.model.lm.to(torch.bfloat16)
    vectors = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    captions = captioner.caption(vectors, Decoding(num_beams=2, max_new_tokens=3, num_return_sequences=2))
    assert [len(c) for c in captions] == [2, 2, 2]
    assert all(0 < score <= 1 for c in captions for _, score in c)


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_bytes(b'{"path": "a"}\n{"path": "b"}\n{"pa')
    drop_partial_line(path)
    assert path.read_bytes() == b'{"path": "a"}\n{"path": "b"}\n'
    path.write_bytes(b'{"pa')
    drop_partial_line(path)
    assert path.read_bytes() == b""


def test_terminal_table_for_small_runs_lines_for_large_ones():
    from rich.console import Console

    def run(n: int) -> str:
        console = Console(file=io.StringIO(), width=200)
        table = TerminalTable(console, stream_overflow=True)
        table.write([{"path": f"p{i}.jpg", "caption": f"cap {i}", "score": 0.5, "error": ""} for i in range(n)])
        table.close()
        return console.file.getvalue()

    assert "┃ image" in run(3)
    lines = run(TABLE_ROWS + 1).splitlines()
    assert len(lines) == TABLE_ROWS + 1 and lines[0] == "p0.jpg\tcap 0\t0.500"


# ----------------------------------------------------------------------------- test-time CLIP reranking

def test_rerank_orders_distinct_candidates_by_their_clip_cosine_to_the_image(photo_folder):
    from stylecap.core.rerank import rerank

    _, good, _ = photo_folder
    encoder = Captioner_encoder()
    image = encoder.encode_images(good[:1])
    texts = ["a red circle", "a blue square", "a green star"]
    cosines = (encoder.encode_texts(texts) @ image[0]).tolist()
    candidates = [[(texts[0], 0.9), (texts[1], 0.1), (texts[0], 0.5), ("", 0.3), (texts[2], 0.2)]]
    ranked = rerank(candidates, image, encoder, keep=3)[0]
    assert [text for text, _ in ranked] == [texts[i] for i in sorted(range(3), key=lambda i: -cosines[i])]
    assert [score for _, score in ranked] == pytest.approx(sorted(cosines, reverse=True), abs=1e-5)
    assert rerank([[("", 0.5)]], image, encoder)[0][0][0] == ""  # nothing but an empty caption: kept as it is


def test_caption_rerank_keeps_the_samples_nearest_each_image(photo_folder, tmp_path, cli):
    """With the shipped captioner (clean English, so a caption read back from the file is the text
    that was scored) and its world CLIP."""
    from stylecap.core.encoders import load_clip

    _, good, _ = photo_folder
    out = tmp_path / "reranked.jsonl"
    assert cli(argv("caption", *good[:3], "--model", asset("captioner"), "--out", out, "--rerank", "6",
                    "--num-captions", "2", "--workers", "0", "--quiet")) == 0
    records = read_jsonl(out)
    assert [r["path"] for r in records] == [str(p) for p in good[:3] for _ in range(2)]
    encoder = load_clip("world", "cpu")
    # the image vectors as the command reads them (oriented, alpha flattened: not encode_images' plain RGB)
    images = torch.cat([batch.vectors for batch in iter_image_vectors(encoder, good[:3], num_workers=0)])
    for i, pair in enumerate(zip(records[::2], records[1::2], strict=True)):
        assert pair[0]["score"] >= pair[1]["score"] and pair[0]["caption"] != pair[1]["caption"]
        for record in pair:  # the score is the caption's CLIP cosine to its image
            cosine = float(encoder.encode_texts([record["caption"]])[0] @ images[i])
            assert record["score"] == pytest.approx(cosine, abs=2e-3)


def test_rerank_is_refused_for_a_model_that_answers(photo_folder, tmp_path, cli, capsys):
    from stylecap.core.model import CloseConfig, build_model

    _, good, _ = photo_folder
    vqa = build_model(CloseConfig(task="vqa", clip=str(asset("tiny-clip.json")), clip_dim=32, lm="tiny-t5",
                                  lora=False)).save(tmp_path / "vqa")
    code = cli(argv("caption", good[0], "--model", vqa, "--question", "what?", "--rerank", "4", "--quiet"))
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and "vqa model" in err and len(err.splitlines()) == 1
