"""`stylecap bench caption`: images/s of `stylecap caption` against a reference path modelled on the
paper's evaluation code, on the same images and model, in one run (report shape:
:mod:`stylecap.experiments.report`)."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stylecap.core.encoders import load_clip
from stylecap.core.images import find_images
from stylecap.core.lms import load_lm
from stylecap.core.model import CloseConfig, CloseModel, load_model
from stylecap.errors import UsageError
from stylecap.experiments.report import BenchReport, measure
from stylecap.options import Decoding, Loading
from stylecap.paths import asset
from stylecap.workflows.caption import Captioner, caption_stream, resolve_model_dir
from stylecap.workflows.records import OutputFile

# t5-base's shapes (its published config); weights are random: throughput does not depend on them.
T5_BASE = {"model_type": "t5", "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_decoder_layers": 12,
           "num_heads": 12, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
           "feed_forward_proj": "relu", "vocab_size": 32128, "dropout_rate": 0.0, "tie_word_embeddings": True}
PAPER_CLIP = "ViT-L-14-quickgelu"  # the architecture of OpenAI's ViT-L/14, which the paper used


@dataclass
class CaptionBench:
    """Settings of ``stylecap bench caption``. ``clip_cfg``/``lm_cfg`` override the random model's shapes
    (an open_clip model config and a transformers config with ``model_type``), e.g. to smoke-test the
    paper-size path with tiny shapes on a CPU."""

    images: int = 64
    image_size: str = "1600x1200"
    folder: Path | None = None
    paper_size: bool = False
    model: Path | None = None
    num_beams: int = 5
    batch_size: int = 32
    reference_batch_size: int = 8
    num_workers: int | None = None
    device: str | None = None
    clip_cfg: dict | None = None
    lm_cfg: dict | None = None


def bench_caption(bench: CaptionBench, report_path: Path | None = None, show: bool = True) -> BenchReport:
    """Caption the same images with the reference path, then with ours; report images/s of both."""
    with tempfile.TemporaryDirectory(prefix="stylecap-bench-") as tmp:
        tmp = Path(tmp)
        paths = ([p for p in find_images([bench.folder]) if isinstance(p, Path)] if bench.folder
                 else synthetic_photos(tmp / "images", bench.images, _size(bench.image_size)))
        model, encoder, setup = _bench_model(bench, tmp)
        sync = _synchronizer(encoder.device)
        _warm_up(model, encoder, bench.num_beams)
        reference = measure("reference (paper-style)", lambda: reference_caption(
            model, encoder, paths, bench.reference_batch_size, bench.num_beams), sync)
        captioner = Captioner(model, encoder, name="bench")  # from here on the LM is bf16 on GPU
        _warm_up(captioner.model, encoder, bench.num_beams)
        output = OutputFile(tmp / "captions.jsonl")
        loading = Loading(batch_size=bench.batch_size, num_workers=bench.num_workers)
        ours = measure("stylecap caption", lambda: caption_stream(
            captioner, iter(paths), Decoding(num_beams=bench.num_beams), [output], loading).images, sync)
        output.close()
    setup.update(images=len(paths), image_size=bench.image_size if not bench.folder else "folder",
                 num_beams=bench.num_beams, batch_size=bench.batch_size,
                 reference_batch_size=bench.reference_batch_size, device=str(encoder.device))
    report = BenchReport("caption", "images", ours, reference, setup)
    if show:
        report.show()
    if report_path:
        report.save(report_path)
    return report


def reference_caption(model, encoder, paths: list[Path], batch_size: int = 8, num_beams: int = 5) -> int:
    """Modelled on the paper's evaluation code: every image decoded into one list in memory first, then
    fp32 encoding and beam search in small batches, all in one process. Returns images captioned."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    images = [Image.open(path).convert("RGB") for path in paths]
    done = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([encoder.preprocess(image) for image in images[start:start + batch_size]])
            vectors = F.normalize(encoder.model.encode_image(pixels.to(encoder.device)).float(), dim=-1)
            done += len(model.generate(vectors, num_beams=num_beams))
    return done


def synthetic_photos(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields with sensor-like noise), so decoding costs what real photos cost."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        field_ = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        pixels = np.asarray(field_, dtype=np.int16) + rng.normal(0, 6, (size[1], size[0], 3)).astype(np.int16)
        path = folder / f"photo-{index:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"bad image size '{text}'", "--image-size", "write WIDTHxHEIGHT, e.g. 1600x1200") from None
    return width, height


def _bench_model(bench: CaptionBench, tmp: Path):
    """(model, encoder, setup): a trained model folder, or a random model with the tiny or the paper's shapes."""
    if bench.model:
        model = load_model(resolve_model_dir(bench.model))
        return model, load_clip(model.config.clip, bench.device), {"model": str(bench.model)}
    clip_cfg, lm_cfg = _shapes(bench)
    clip_spec = tmp / "clip.json"
    clip_spec.write_text(json.dumps(clip_cfg))
    encoder = load_clip(str(clip_spec), bench.device)
    return random_model(str(clip_spec), encoder.dim, lm_cfg), encoder, {
        "model": "paper-size (random weights)" if bench.paper_size else "tiny (random weights)",
        "clip_cfg": clip_cfg, "lm_cfg": lm_cfg}


def _shapes(bench: CaptionBench) -> tuple[dict, dict]:
    if bench.paper_size:
        import open_clip

        clip_cfg, lm_cfg = open_clip.get_model_config(PAPER_CLIP), T5_BASE
    else:
        clip_cfg = json.loads(asset("tiny-clip.json").read_text())
        lm_cfg = json.loads(asset("lms", "tiny-t5.json").read_text())["config"]
    return bench.clip_cfg or clip_cfg, bench.lm_cfg or lm_cfg


def random_model(clip_spec: str, clip_dim: int, lm_cfg: dict):
    """A CLOSE model with a randomly initialised LM of the given shapes and the tiny built-in tokenizer
    (ids beyond its vocabulary decode to nothing, which does not change the work done per token)."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForSeq2SeqLM


    tokenizer = load_lm("tiny-t5").tokenizer
    cfg = dict(lm_cfg)
    model_type = cfg.pop("model_type")
    cfg.setdefault("vocab_size", len(tokenizer))
    config = CONFIG_MAPPING[model_type](pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                        decoder_start_token_id=tokenizer.pad_token_id, **cfg)
    torch.manual_seed(0)
    lm = AutoModelForSeq2SeqLM.from_config(config)
    return CloseModel(CloseConfig(clip=clip_spec, clip_dim=clip_dim, lm=model_type, lora=False), lm, tokenizer,
                      is_seq2seq=True).eval()


def _warm_up(model, encoder, num_beams: int) -> None:
    """One small generate call, so one-off costs (kernels, allocator) are not timed."""
    import torch

    model.to(encoder.device)
    model.generate(torch.nn.functional.normalize(torch.randn(2, encoder.dim), dim=-1), num_beams=num_beams,
                   max_new_tokens=4)


def _synchronizer(device):
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else None
