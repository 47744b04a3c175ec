"""The world's tiny CLIP: an open_clip model (custom config) trained contrastively on the ``clip`` split.

Two properties must hold together: the encoder *sees* (colour bound to shape, objects recognised)
and the modality gap is *real* (text-only transfer is hurt unless the gap is bridged). The recipe:

* a small ResNet vision tower (open_clip's ``ModifiedResNet``): a small ViT learned colour but not
  shape in a prototype; convolutions bind the two;
* a 96-pixel input: the world's 64-pixel images are upsampled (open_clip's own bicubic resize, at
  training as at inference), so the tower's 32× downsampling ends on a 3 × 3 map, one cell per grid
  cell of the scene, and its 4× stem leaves a small shape 4 feature pixels wide, not 2.5;
* hard negatives: each image also meets captions of its own scene made false in one detail (colours
  swapped between two objects, one shape or one size changed), as extra texts in the image→text
  softmax, so both towers must encode which colour goes with which shape and size;
* partial captions: some positives name only part of the scene (one object dropped), as real
  captions do, which keeps image and text vectors apart;
* a logit scale fixed at 100 (where real CLIP ends), a temperature that also keeps the gap open:
  small cosine margins already win the softmax, so images never move close to their captions.
  A softer second phase was measured and not kept: 600 more steps at logit scale 25 (lr 3e-4) pull
  pairs together (R@1 0.87 → 0.89, cos(image, own caption) 0.56 → 0.74, means 0.80 → 0.41 apart),
  and at 1,500 steps × 2 seeds plain noise rises from 0.64× to 0.77× the image-trained reference's
  CIDEr-D (object F1 0.55× → 0.69×; VQA 0.71× → 0.76×, VE 0.88× → 0.90×), but no-noise transfer rises
  with it: 16% below noise on captions (was 41%), level with noise on VE and 6% above it on VQA, and
  the mean-shift adapter falls to noise's level. At logit scale 10 the gap nearly closes (cos 0.91).
  Plain noise's ratio and the no-noise penalty move together with the gap; the paper's picture
  (no-noise transfer badly hurt, adapters helping) needs the wide gap, so phase 1 alone ships;
* 128-d vectors. The same recipe at 512-d (as ViT-B CLIPs) was measured too: it recognised a little
  better (image-trained object F1 0.82 vs 0.78 at 1,500 steps) but the plain-noise captioner fell
  from 0.64× to 0.46× the reference's CIDEr-D, so the smaller width stays.

Torch lives here only; the world generator itself stays torch-free.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from stylecap.core.encoders import BUILTIN_CLIPS, load_clip, save_clip
from stylecap.errors import InputError
from stylecap.paths import asset, cache_root, text_digest
from stylecap.world import build_world, load_scenes, vocab
from stylecap.world.build import VERSION
from stylecap.world.formats import image_path
from stylecap.world.language import captions

MODEL_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 96, "layers": [1, 1, 1, 1], "width": 32, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
RECIPE = {"steps": 2400, "batch_size": 128, "lr": 1e-3, "warmup": 100, "weight_decay": 0.1,
          "logit_scale": 100.0, "partial": 0.3, "hard_negatives": 3, "seed": 0}
_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's defaults, as save_clip writes them
_STD = (0.26862954, 0.26130258, 0.27577711)
_POSITIVES, _EXTRA = 5, 2  # captions per image: the world's own five; partial and negative ones made here


# ----------------------------------------------------------------------------- data

def load_images(world: Path, split: str, size: int = MODEL_CFG["vision_cfg"]["image_size"]) -> tuple[list, torch.Tensor]:
    """The split's scenes (image id order) and their pixels, resized to ``size`` as open_clip's
    transform does (bicubic; images are square), as one uint8 tensor [N, 3, size, size]."""
    from PIL import Image


    world = Path(world)
    if not (world / "world.json").exists():
        raise InputError("not a world folder (no world.json)", str(world), "build one with `stylecap world build`")
    scenes = [s for _, s in sorted(load_scenes(world).items()) if s.split == split]
    if not scenes:
        raise InputError(f"the world has no '{split}' images", str(world), "rebuild it with that split")

    def pixels_of(scene) -> np.ndarray:
        image = Image.open(world / image_path(scene)).convert("RGB")
        return np.asarray(image if image.size == (size, size) else image.resize((size, size), Image.BICUBIC))

    pixels = np.stack([pixels_of(s) for s in scenes])
    return scenes, torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → the float input open_clip's val transform gives (images are already square)."""
    mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_STD).view(1, 3, 1, 1)
    return (pixels.float() / 255 - mean) / std


def _swapped(scene, rng: random.Random):
    """The scene with colours swapped between two objects (one object: a different colour)."""
    objs = list(scene.objects)
    if len(objs) == 1:
        return _changed(scene, rng, "colour", "colours")
    i, j = rng.sample(range(len(objs)), 2)
    objs[i], objs[j] = replace(objs[i], colour=objs[j].colour), replace(objs[j], colour=objs[i].colour)
    return replace(scene, objects=tuple(objs))


def _changed(scene, rng: random.Random, attribute: str, table: str):
    """The scene with one object's ``attribute`` changed: a size flipped, or a shape or colour no
    object in the scene has (scenes never repeat those)."""
    objs = list(scene.objects)
    i = rng.randrange(len(objs))
    taken = {getattr(o, attribute) for o in (objs if attribute != "size" else objs[i:i + 1])}
    value = rng.choice([v for v in vocab()[table] if v not in taken])
    objs[i] = replace(objs[i], **{attribute: value})
    return replace(scene, objects=tuple(objs))


# Hard negatives, one of each per image: colours bound to the wrong shapes, a wrong shape, a wrong
# size. Colour swaps alone can be told apart by colour and position; the others need shape and size.
_NEGATIVES = (_swapped, lambda s, rng: _changed(s, rng, "shape", "shapes"),
              lambda s, rng: _changed(s, rng, "size", "sizes"))


def _partial(scene, rng: random.Random):
    """The scene with one object dropped (a one-object scene stays whole)."""
    if len(scene.objects) == 1:
        return scene
    keep = rng.sample(list(scene.objects), len(scene.objects) - 1)
    return replace(scene, objects=tuple(keep))


def caption_table(scenes: list, seed: int) -> dict[str, list[list[str]]]:
    """Per image: whole captions, partial captions, hard-negative captions (fixed counts each)."""
    def texts(scene, n: int) -> list[str]:
        found = [d.text for d in captions(scene, rng, n)]
        return (found * n)[:n]  # a tiny scene may have fewer distinct captions: repeat them

    rng = random.Random(seed)
    return {"whole": [texts(s, _POSITIVES) for s in scenes],
            "partial": [texts(_partial(s, rng), _EXTRA) for s in scenes],
            "negative": [[texts(make(s, rng), 1)[0] for make in _NEGATIVES] for s in scenes]}


def tokenize(texts: list[str]) -> torch.Tensor:
    import open_clip

    return open_clip.tokenize(texts, context_length=MODEL_CFG["text_cfg"]["context_length"])


def _token_table(table: dict[str, list[list[str]]]) -> dict[str, torch.Tensor]:
    """The caption table tokenized once: [N, k, context] per kind."""
    out = {}
    for kind, rows in table.items():
        k = len(rows[0])
        flat = tokenize([t for row in rows for t in row])
        out[kind] = flat.view(len(rows), k, -1)
    return out


# ----------------------------------------------------------------------------- training

def build_clip(seed: int = 0):
    import open_clip

    torch.manual_seed(seed)
    return open_clip.model.CLIP(**MODEL_CFG)


def train_clip(world: Path, out: Path, steps: int | None = None, batch_size: int | None = None,
               threads: int | None = 2, log: Callable[[str], None] = print, **recipe) -> Path:
    """Train the world CLIP on ``world``'s clip split and save it (open_clip folder layout) with
    its recipe and stats; returns the folder."""
    cfg = {**RECIPE, **recipe, **{k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v}}
    if threads:
        torch.set_num_threads(threads)
    scenes, pixels = load_images(world, "clip")
    tokens = _token_table(caption_table(scenes, cfg["seed"]))
    model = build_clip(cfg["seed"]).train()
    model.logit_scale.data.fill_(math.log(cfg["logit_scale"]))
    model.logit_scale.requires_grad_(False)  # fixed temperature: part of the recipe, see the module doc
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg["warmup"], cfg["steps"]))
    gen = torch.Generator().manual_seed(cfg["seed"])
    start = time.time()
    for step in range(cfg["steps"]):
        loss = _step_loss(model, pixels, tokens, cfg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            log(f"step {step + 1}/{cfg['steps']} loss {loss.item():.4f} {time.time() - start:.0f}s")
    model.eval()
    out = Path(out)
    save_clip(model.half(), MODEL_CFG, out)  # fp16 on disk: the token table dominates the size
    (out / "recipe.json").write_text(json.dumps({**cfg, "world": _world_info(world),
                                                 "train_seconds": round(time.time() - start)}, indent=2) + "\n")
    return out


def _lr_factor(step: int, warmup: int, steps: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _step_loss(model, pixels: torch.Tensor, tokens: dict[str, torch.Tensor], cfg: dict,
               gen: torch.Generator) -> torch.Tensor:
    """Symmetric InfoNCE; the image→text side also ranks each image's hard negatives."""
    n = pixels.shape[0]
    idx = torch.randint(n, (cfg["batch_size"],), generator=gen)
    b = len(idx)
    pick = torch.randint(_POSITIVES, (b,), generator=gen)
    pos = tokens["whole"][idx, pick]
    partial = torch.rand(b, generator=gen) < cfg["partial"]
    pos[partial] = tokens["partial"][idx[partial], torch.randint(_EXTRA, (int(partial.sum()),), generator=gen)]
    texts = [pos]
    kinds = torch.rand(b, len(_NEGATIVES), generator=gen).argsort(dim=1)  # distinct kinds per image
    for k in range(int(cfg["hard_negatives"])):
        texts.append(tokens["negative"][idx, kinds[:, k]])
    image = F.normalize(model.encode_image(normalise(pixels[idx])), dim=-1)
    text = F.normalize(model.encode_text(torch.cat(texts)), dim=-1)
    logits = model.logit_scale.exp() * image @ text.T  # [b, b × (1 + hard negatives)]
    target = torch.arange(b)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :b].T, target)) / 2


def _world_info(world: Path) -> dict:
    info = json.loads((Path(world) / "world.json").read_text())
    return {k: info[k] for k in ("seed", "splits", "image_size")}


# ----------------------------------------------------------------------------- stats

@torch.inference_mode()
def clip_stats(spec: str, world: Path, split: str = "test") -> dict:
    """How the CLIP sees ``world``'s ``split``: retrieval R@1 both ways (one whole caption per
    image, among all of the split's images), mean cosines, and the distance between modality means."""
    encoder = load_clip(spec, device="cpu")
    size = encoder.model.visual.image_size  # an int for ResNet towers, a pair for ViTs
    scenes, pixels = load_images(world, split, size if isinstance(size, int) else size[0])
    texts = [row[0] for row in caption_table(scenes, seed=1)["whole"]]
    images = torch.cat([encoder.encode_image_batch(normalise(pixels[i:i + 256]))
                        for i in range(0, len(pixels), 256)])
    images = F.normalize(images.float(), dim=-1)
    captions = encoder.encode_texts(texts)
    sims = images @ captions.T
    target = torch.arange(len(texts))
    return {"world": {**_world_info(world), "split": split, "images": len(texts)},
            "r1_image_to_text": _round((sims.argmax(1) == target).float().mean()),
            "r1_text_to_image": _round((sims.argmax(0) == target).float().mean()),
            "cos_image_own_caption": _round(sims.diagonal().mean()),
            "cos_caption_unrelated_caption": _round(_off_diagonal_mean(captions @ captions.T)),
            "cos_image_unrelated_image": _round(_off_diagonal_mean(images @ images.T)),
            "gap_norm": _round((images.mean(0) - captions.mean(0)).norm())}


def _off_diagonal_mean(sims: torch.Tensor) -> torch.Tensor:
    n = sims.shape[0]
    return (sims.sum() - sims.diagonal().sum()) / (n * n - n)


def _round(x) -> float:
    return round(float(x), 4)


STAT_LABELS = {"r1_image_to_text": "R@1 image→text", "r1_text_to_image": "R@1 text→image",
               "cos_image_own_caption": "cos(image, own caption)",
               "cos_caption_unrelated_caption": "cos(caption, unrelated caption)",
               "cos_image_unrelated_image": "cos(image, unrelated image)",
               "gap_norm": "‖mean image − mean text‖"}


def shipped_stats() -> list[dict]:
    """The stats measured when the shipped CLIP was trained (``stats.json`` beside its weights)."""
    path = asset(BUILTIN_CLIPS["world"], "stats.json")
    return json.loads(path.read_text())["stats"] if path.exists() else []


def check_world() -> Path:
    """The small seed-0 world the shipped stats are also measured on (built in the cache once), so a
    test can rebuild it in seconds and check the shipped CLIP against ``stats.json``."""
    # keyed by the vocabulary and format version: a world built by an older stylecap is not reused
    key = text_digest([json.dumps(vocab(), sort_keys=True), str(VERSION)])
    world = cache_root() / "worlds" / f"small-seed0-{key}"
    if not (world / "world.json").exists():
        build_world(world, seed=0, size="small", force=True)
    return world


def make_world_clip(world: Path, out: Path, steps: int | None = None, batch_size: int | None = None,
                    threads: int | None = 2, log: Callable[[str], None] = print) -> list[dict]:
    """Train the world CLIP, measure it on ``world``'s test split and on the small check world, and
    write ``stats.json`` beside the weights; returns the stats."""
    train_clip(world, out, steps=steps, batch_size=batch_size, threads=threads, log=log)
    stats = [clip_stats(str(out), world), clip_stats(str(out), check_world())]
    recipe = json.loads((Path(out) / "recipe.json").read_text())
    (Path(out) / "stats.json").write_text(json.dumps({"recipe": recipe, "stats": stats}, indent=2) + "\n")
    return stats


def print_stats(spec: str = "world", world: Path | None = None, stats: list[dict] | None = None) -> list[dict]:
    """Print stats as a table: given ones, measured on ``world``'s test split, or the shipped ones."""
    from rich.console import Console
    from rich.table import Table

    if stats is None:
        stats = [clip_stats(spec, world)] if world else shipped_stats()
    if not stats:
        raise InputError("the shipped CLIP has no stats.json", spec, "pass --world W to measure it")
    table = Table(title=f"CLIP '{spec}'")
    table.add_column("statistic")
    for entry in stats:
        w = entry["world"]
        table.add_column(f"seed {w['seed']}: {w['images']} {w['split']}", justify="right")
    for key, label in STAT_LABELS.items():
        table.add_row(label, *(f"{entry[key]:.3f}" for entry in stats))
    Console().print(table)
    return stats
