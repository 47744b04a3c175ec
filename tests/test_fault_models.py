"""Models and training against hostile or broken inputs: custom code that must never run, pickles that
must never be opened, damaged and foreign model folders, tokenizers that encode nothing, lengths
beyond what the LM can read, skipped records that must be reported, more processes than rows.
Real model folders, real damaged files, real subprocesses."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_captions
from PIL import Image

from stylecap.core.encoders import load_clip, save_clip
from stylecap.core.lms import load_lm, resolve_lm
from stylecap.core.model import CloseConfig, build_model, fit_lengths, load_model
from stylecap.core.tasks import get_task
from stylecap.errors import EXIT_MODEL, EXIT_OK, EXIT_USAGE, ModelError
from stylecap.paths import asset
from stylecap.workflows.pipeline import build_config

pytestmark = pytest.mark.fault

TINY_CLIP = str(asset("tiny-clip.json"))
FAST = ["--beam", "1", "--max-length", "4", "--quiet"]


def one_line(err: str) -> str:
    """The single line a user error prints (and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def stylecap(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stylecap", *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A LoRA model on tiny-t5: every part a saved folder has (stylecap.json, mapper, adapter,
    tokenizer/, lora/, lm/)."""
    torch.manual_seed(0)
    config = CloseConfig(clip=TINY_CLIP, clip_dim=32, lm="tiny-t5")
    return build_model(config).save(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def gpt2_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = CloseConfig(clip=TINY_CLIP, clip_dim=32, lm="tiny-gpt2", prefix_len=2)
    return build_model(config).save(tmp_path_factory.mktemp("model") / "gpt2")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    encoder = load_clip(TINY_CLIP)
    return save_clip(encoder.model, json.loads(Path(TINY_CLIP).read_text()), tmp_path_factory.mktemp("clip") / "tiny")


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "captions.txt"
    path.write_text("\n".join(make_captions(64)) + "\n")
    return path


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--clip", TINY_CLIP, "--out", str(out), "--steps", "2", "--batch-size", "4",
            "--quiet", *extra]


def with_clip(args: list[str], spec: str) -> list[str]:
    return [spec if i and args[i - 1] == "--clip" else arg for i, arg in enumerate(args)]


class Planted:
    """A pickle that writes ``marker`` when it is unpickled: proof that a load never happened."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('unpickled')",)


def plant_pickle(path: Path, marker: Path) -> Path:
    torch.save({"weight": Planted(marker)}, path)
    return path


# ----------------------------------------------------------------------------- custom code never runs

def plant_custom_code(folder: Path, marker: Path) -> None:
    """Make an LM folder name Python code of its own, as a downloaded model can: the module writes
    ``marker`` the moment it is imported."""
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="planted", auto_map={"AutoConfig": "planted.PlantedConfig",
                                                  "AutoModelForCausalLM": "planted.PlantedModel",
                                                  "AutoModelForSeq2SeqLM": "planted.PlantedModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "planted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                       "from transformers import PretrainedConfig\n"
                                       "class PlantedConfig(PretrainedConfig):\n    model_type = 'planted'\n")


@pytest.mark.parametrize("where", ["train --lm FOLDER", "caption --model FOLDER"])
def test_custom_code_is_refused_and_never_runs_even_when_answered_yes(tmp_path, where, saved_model, image, captions):
    marker = tmp_path / "marker"
    if where.startswith("train"):
        lm = shutil.copytree(resolve_lm("tiny-gpt2"), tmp_path / "lm")
        plant_custom_code(lm, marker)
        args = train_args(captions, tmp_path / "run", "--lm", str(lm))
    else:
        model = shutil.copytree(saved_model, tmp_path / "model")
        plant_custom_code(model / "lm", marker)
        args = ["caption", str(image), "--model", str(model), *FAST]
    done = stylecap(*args, stdin="y\n" * 20)  # what `yes | stylecap …` answers to transformers' prompt
    assert done.returncode == EXIT_MODEL, done.stderr
    assert "custom-code models are refused" in one_line(done.stderr)
    assert not marker.exists()


def test_a_clip_text_tower_with_custom_code_is_refused(tmp_path, clip_folder):
    marker = tmp_path / "marker"
    tower = shutil.copytree(resolve_lm("tiny-gpt2"), tmp_path / "tower")
    plant_custom_code(tower, marker)
    folder = shutil.copytree(clip_folder, tmp_path / "clip")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"] = {"hf_model_name": str(tower), "hf_tokenizer_name": str(tower)}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="custom-code models are refused"):
        load_clip.__wrapped__(str(folder))
    assert not marker.exists()


# ----------------------------------------------------------------------------- no pickle is read

def test_lm_folder_with_pickled_weights_is_refused_before_loading(tmp_path, cli, captions, capsys):
    marker = tmp_path / "marker"
    lm = shutil.copytree(resolve_lm("tiny-gpt2"), tmp_path / "lm")
    (lm / "model.safetensors").unlink()
    plant_pickle(lm / "pytorch_model.bin", marker)
    assert cli(train_args(captions, tmp_path / "run", "--lm", str(lm))) == EXIT_MODEL
    line = one_line(capsys.readouterr().err)
    assert "pickle (pytorch_model.bin)" in line and str(lm) in line
    assert not marker.exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_lora_adapter_as_pickle_is_refused(tmp_path, saved_model):
    marker = tmp_path / "marker"
    model = shutil.copytree(saved_model, tmp_path / "model")
    (model / "lora" / "adapter_model.safetensors").unlink()
    plant_pickle(model / "lora" / "adapter_model.bin", marker)
    with pytest.raises(ModelError, match=r"pickle \(adapter_model.bin\)"):
        load_model(model)
    assert not marker.exists()


def test_clip_folder_with_pickled_weights_is_refused(tmp_path, clip_folder):
    marker = tmp_path / "marker"
    folder = shutil.copytree(clip_folder, tmp_path / "clip")
    (folder / "open_clip_model.safetensors").unlink()
    plant_pickle(folder / "open_clip_pytorch_model.bin", marker)
    with pytest.raises(ModelError, match=r"pickle \(open_clip_pytorch_model.bin\)"):
        load_clip.__wrapped__(str(folder))
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth", ".ckpt"])
def test_user_clip_checkpoint_must_be_safetensors(tmp_path, suffix):
    marker = tmp_path / "marker"
    checkpoint = plant_pickle(tmp_path / f"weights{suffix}", marker)
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_clip.__wrapped__(f"{TINY_CLIP}:{checkpoint}")
    assert not marker.exists()


# ----------------------------------------------------------------------------- damaged model folders

def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_meta(change):
    def damage(folder: Path, _other: Path) -> None:
        meta = json.loads((folder / "stylecap.json").read_text())
        (folder / "stylecap.json").write_text(json.dumps(change(meta)))
    return damage


def _without_config(meta):
    return {k: v for k, v in meta.items() if k != "config"}


def _with_config(**values):
    return lambda meta: {**meta, "config": {**meta["config"], **values}}


DAMAGES = {
    "truncated mapper": (lambda f, o: truncate(f / "mapper.safetensors"), "mapper.safetensors"),
    "zero-byte mapper": (lambda f, o: truncate(f / "mapper.safetensors", 0), "mapper.safetensors"),
    "truncated adapter": (lambda f, o: truncate(f / "adapter.safetensors", 0.9), "adapter.safetensors"),
    "zero-byte adapter": (lambda f, o: truncate(f / "adapter.safetensors", 0), "adapter.safetensors"),
    "truncated lora": (lambda f, o: truncate(f / "lora" / "adapter_model.safetensors"), "adapter_model.safetensors"),
    "zero-byte lora": (lambda f, o: truncate(f / "lora" / "adapter_model.safetensors", 0), "adapter_model.safetensors"),
    "truncated lm": (lambda f, o: truncate(f / "lm" / "model.safetensors", 0.99), "model.safetensors"),
    "zero-byte lm": (lambda f, o: truncate(f / "lm" / "model.safetensors", 0), "model.safetensors"),
    "config is a list": (lambda f, o: (f / "stylecap.json").write_text("[1, 2]"), "stylecap.json"),
    "config is not JSON": (lambda f, o: truncate(f / "stylecap.json"), "stylecap.json"),
    "config lacks config": (edit_meta(_without_config), "stylecap.json"),
    "config lacks clip": (edit_meta(lambda m: {**m, "config": {k: v for k, v in m["config"].items() if k != "clip"}}),
                          "stylecap.json"),
    "prefix_len is text": (edit_meta(_with_config(prefix_len="four")), "stylecap.json"),
    "noise is a list": (edit_meta(_with_config(noise=[0.1])), "stylecap.json"),
    "lora is a number": (edit_meta(_with_config(lora=3)), "stylecap.json"),
    "negative prefix": (edit_meta(_with_config(prefix_len=-4)), "stylecap.json"),
    "unknown mapper": (edit_meta(_with_config(mapper="x")), "stylecap.json"),
    "version is text": (edit_meta(lambda m: {**m, "format_version": "one"}), "stylecap.json"),
    "version is fractional": (edit_meta(lambda m: {**m, "format_version": 1.5}), "stylecap.json"),
    "is_seq2seq missing": (edit_meta(lambda m: {k: v for k, v in m.items() if k != "is_seq2seq"}), "stylecap.json"),
    "mapper of another model": (lambda f, o: shutil.copy(o / "mapper.safetensors", f / "mapper.safetensors"),
                                "mapper.safetensors"),
    "lm weights of another architecture": (lambda f, o: shutil.copy(o / "lm" / "model.safetensors",
                                                                    f / "lm" / "model.safetensors"), "lm"),
    "lora of another base": (lambda f, o: shutil.copy(o / "lora" / "adapter_model.safetensors",
                                                      f / "lora" / "adapter_model.safetensors"), "lora"),
    "tokenizer files missing": (lambda f, o: [p.unlink() for p in (f / "tokenizer").iterdir()], "tokenizer"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_model_folder_is_one_line_naming_the_file(tmp_path, damage, saved_model, gpt2_model, image, cli,
                                                          capsys):
    model = shutil.copytree(saved_model, tmp_path / "model")
    harm, named = DAMAGES[damage]
    harm(model, gpt2_model)
    assert cli(["caption", str(image), "--model", str(model), *FAST]) == EXIT_MODEL
    line = one_line(capsys.readouterr().err)
    assert named in line, line


def test_moved_clip_folder_says_the_folder_is_missing(tmp_path, clip_folder, image, cli, capsys):
    clip = shutil.copytree(clip_folder, tmp_path / "clip")
    model = build_model(CloseConfig(clip=str(clip), clip_dim=32, lm="tiny-t5", lora=False)).save(tmp_path / "model")
    clip.rename(tmp_path / "moved")
    assert cli(["caption", str(image), "--model", str(model), *FAST]) == EXIT_MODEL
    line = one_line(capsys.readouterr().err)
    assert "CLIP folder not found" in line and str(clip) in line
    assert "--clip" not in line and "unknown CLIP model" not in line  # caption has no --clip option


@pytest.mark.parametrize("damage", ["truncated", "zero-byte"])
def test_damaged_clip_weights_are_one_line(tmp_path, clip_folder, captions, damage, cli, capsys):
    folder = shutil.copytree(clip_folder, tmp_path / "clip")
    truncate(folder / "open_clip_model.safetensors", 0.5 if damage == "truncated" else 0)
    assert cli(with_clip(train_args(captions, tmp_path / "run"), str(folder))) == EXIT_MODEL
    assert "open_clip_model.safetensors" in one_line(capsys.readouterr().err)


def test_wrong_architecture_clip_checkpoint_says_so(tmp_path, captions, cli, capsys):
    wider = json.loads(Path(TINY_CLIP).read_text())
    wider["text_cfg"]["width"] = 48
    (tmp_path / "wider.json").write_text(json.dumps(wider))
    folder = save_clip(load_clip.__wrapped__(str(tmp_path / "wider.json")).model, wider, tmp_path / "wider")
    args = with_clip(train_args(captions, tmp_path / "run"), f"{TINY_CLIP}:{folder / 'open_clip_model.safetensors'}")
    assert cli(args) == EXIT_MODEL
    line = one_line(capsys.readouterr().err)
    assert "do not fit" in line and "online" not in line


def test_offline_pretrained_tag_is_one_line_without_library_log_lines(tmp_path, captions):
    """No stray `ERROR root:` from open_clip: the download is tried (and refused) before open_clip runs."""
    done = stylecap(*with_clip(train_args(captions, tmp_path / "run"), "RN50:openai"),
                    env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == EXIT_MODEL, done.stderr
    line = one_line(done.stderr)
    assert "RN50:openai" in line and "ERROR" not in done.stderr


# ----------------------------------------------------------------------------- tokenizers that encode nothing

def word_level_tokenizer(folder: Path, vocab: dict[str, int], **special) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=special.get("unk_token")))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special).save_pretrained(folder)


TOKENIZERS = {
    "no tokenizer files": (lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
                           "no tokenizer files"),
    "empty vocabulary": (lambda f: word_level_tokenizer(f, {}), "empty vocabulary"),
    "only unknown words": (lambda f: word_level_tokenizer(f, {"<unk>": 0, "</s>": 1, "<pad>": 2}, unk_token="<unk>",
                                                          eos_token="</s>", pad_token="<pad>"), "encodes a sample"),
}


@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_lm_whose_tokenizer_encodes_nothing_is_refused_before_training(tmp_path, kind, captions, cli, capsys):
    lm = shutil.copytree(resolve_lm("tiny-t5"), tmp_path / "lm")
    harm, message = TOKENIZERS[kind]
    harm(lm)
    assert cli(train_args(captions, tmp_path / "run", "--lm", str(lm))) == EXIT_MODEL
    assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ----------------------------------------------------------------------------- lengths within the LM's limits

def test_generation_stops_at_the_lms_position_limit():
    """tiny-gpt2 has 256 positions: asked for 4,096 new tokens, greedy decoding of its random weights runs
    (without an end-of-text) to the last position instead of past the position table."""
    torch.manual_seed(0)
    model = build_model(CloseConfig(clip="test", clip_dim=32, lm="tiny-gpt2", lora=False)).eval()
    assert model.position_limit == 256
    vecs = torch.nn.functional.normalize(torch.randn(1, 32, generator=torch.Generator().manual_seed(3)), dim=-1)
    [[(text, score)]] = model.generate(vecs, num_beams=1, max_new_tokens=4096)  # past 256: an IndexError
    assert text and 0 <= score <= 1
    assert model.new_token_budget(4096, input_width=model.config.prefix_len) == 256 - model.config.prefix_len


def test_a_target_length_beyond_the_lm_is_a_usage_error(tmp_path, captions, cli, capsys):
    args = train_args(captions, tmp_path / "run", "--lm", "tiny-gpt2", "--max-target-len", "300")
    assert cli(args) == EXIT_USAGE
    line = one_line(capsys.readouterr().err)
    assert "--max-target-len 300" in line and "256 positions" in line


def test_task_lengths_are_fitted_into_a_small_lm():
    """Visual news reads 256 input tokens: with tiny-gpt2's 256 positions the input is shortened."""
    loaded = load_lm("tiny-gpt2")
    config = fit_lengths(build_config("news", _choices(), 32), loaded)
    assert config.prefix_len + config.max_input_len + config.max_target_len <= 256
    assert config.max_target_len == get_task("news").max_target_len
    seq2seq = fit_lengths(build_config("news", _choices(lm="tiny-t5"), 32), load_lm("tiny-t5"))
    assert seq2seq.max_input_len == get_task("news").max_input_len  # relative positions: no table to fit


def _choices(**values):
    from stylecap.options import ModelChoices

    return ModelChoices(clip=TINY_CLIP, **{"lm": "tiny-gpt2", **values})


# ----------------------------------------------------------------------------- train reports what it skipped

def test_train_reports_skipped_records_in_one_line(tmp_path, cli, capsys):
    good = [{"sentence1": f"a red circle number {i}", "sentence2": "there is a circle", "gold_label": "entailment"}
            for i in range(8)]
    lines = [json.dumps(r) for r in good] + [
        json.dumps({"sentence1": "a blue square", "sentence2": "a square", "gold_label": "-"}),
        json.dumps({"sentence1": "a star", "sentence2": "a star", "gold_label": "-"}),
        '{"sentence1": "torn line',
    ]
    data = tmp_path / "snli_1.0_train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    assert cli(train_args(data, tmp_path / "run", "--task", "ve")) == EXIT_OK
    err = capsys.readouterr().err
    [summary] = [line for line in err.splitlines() if line.startswith("skipped")]
    assert summary.startswith("skipped 3 record(s)"), summary
    assert "2 pairs without a gold label" in summary and "1 malformed" in summary


# ----------------------------------------------------------------------------- more processes than rows

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "stylecap", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=os.environ, timeout=300)


def test_two_processes_share_fewer_rows_than_a_batch_or_refuse_one_row(tmp_path):
    few = tmp_path / "few.txt"
    few.write_text("\n".join(make_captions(3)) + "\n")
    done = torchrun(*train_args(few, tmp_path / "few", "--batch-size", "8"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "few" / "model" / "stylecap.json").exists()

    single = tmp_path / "single.txt"
    single.write_text(make_captions(1)[0] + "\n")
    done = torchrun(*train_args(single, tmp_path / "single"))
    assert done.returncode != 0
    assert "1 training example(s) cannot be shared by 2 processes" in done.stderr
    assert "max() arg" not in done.stderr and "IndexError" not in done.stderr
