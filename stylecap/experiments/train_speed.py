"""`stylecap bench train`: training samples/s of `stylecap train` against a reference path modelled on
the paper's training code, on the same captions, LM shapes, batches and number of steps, in one run
(report shape: :mod:`stylecap.experiments.report`).

* ours: `stylecap train`'s own loop (:func:`stylecap.core.train.train`), reading CLIP text vectors
  from the embedding cache, training LoRA adapters through peft, bf16 autocast where the accelerator
  has it;
* the reference: every step re-encodes its captions through the CLIP text tower, in fp32, and
  fine-tunes every weight of the LM; there are no cached vectors.

Both paths run ``warmup_steps`` untimed steps first (one-off allocations, kernel choice); their
figures are the steps after those. The embedding cache is built once per CLIP and corpus and reused
by every epoch and every later run, so it is timed apart, and the estimate of a whole COCO-sized
job counts it in.
"""
from __future__ import annotations

import gc
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from statistics import median

from stylecap.core.encoders import load_clip
from stylecap.core.model import build_model
from stylecap.core.tasks import ReadOptions, get_task, with_field
from stylecap.core.train import EpochBatches, TrainOptions, auto_precision, train
from stylecap.core.vectors import EmbeddingCache
from stylecap.experiments.report import BenchReport, PathResult, measure
from stylecap.experiments.scale import write_caption_data
from stylecap.experiments.speed import PAPER_CLIP, T5_BASE, random_model
from stylecap.options import ModelChoices, TrainBench
from stylecap.workflows.pipeline import build_config, rows_from_examples


def bench_train(bench: TrainBench, report_path: Path | None = None, show: bool = True) -> BenchReport:
    """Train the same LM shapes on the same batches with the reference path, then with ours."""
    import torch

    threads = torch.get_num_threads()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    try:
        return _bench_train(bench, report_path, show)
    finally:
        torch.set_num_threads(threads)


def _bench_train(bench: TrainBench, report_path: Path | None, show: bool) -> BenchReport:
    import torch

    with tempfile.TemporaryDirectory(prefix="stylecap-bench-train-") as tmp:
        tmp = Path(tmp)
        clip_spec, lm, setup = _models(bench, tmp)
        encoder = load_clip(clip_spec)  # on the device `stylecap train` picks
        total = bench.warmup_steps + bench.steps
        data = write_caption_data(tmp / "data", total * bench.batch_size)
        task = get_task("caption")
        examples = with_field(task.read(data.karpathy, ReadOptions(split="train")), "clip_text",
                              str(data.karpathy), task.clip_text_hint)
        texts, rows = rows_from_examples(examples)
        config = build_config("caption", ModelChoices(clip=clip_spec, lm=lm), encoder.dim)
        sync = torch.cuda.synchronize if encoder.device.type == "cuda" else None
        cache = EmbeddingCache(encoder, root=tmp / "embeddings")
        building = measure("embedding cache build", lambda: len(cache.vectors(texts)), sync)

        options = TrainOptions(out_dir=tmp / "run", steps=total, batch_size=bench.batch_size, log_every=1,
                               checkpoint_every=total + 1, progress=False)
        clock: dict = {"memory_at_start_mb": {"reference": _memory_mb()}}
        reference = _timed(measure("reference (paper-style)", lambda: reference_train(
            encoder, texts, rows, config, options, bench.warmup_steps, clock), sync), clock, "reference")
        _release_freed_memory()
        clock["memory_at_start_mb"]["ours"] = _memory_mb()  # what the reference run left allocated counts here
        ours = _timed(measure("stylecap train", lambda: ours_train(
            cache, texts, rows, config, options, bench.warmup_steps, clock), sync), clock, "ours")

    setup.update(steps=bench.steps, warmup_steps=bench.warmup_steps, batch_size=bench.batch_size,
                 device=str(encoder.device), ours_precision=clock["ours_precision"], reference_precision="fp32",
                 captions=data.captions, distinct_captions=len(texts), lora_r=config.lora_r,
                 trainable_parameters=clock["trainable"],
                 cache_build={"captions": building.items, "seconds": building.seconds,
                              "captions_per_s": building.items_per_s, "peak_memory_mb": building.peak_memory_mb},
                 wall_seconds={"reference": clock["reference_wall"], "ours": clock["ours_wall"]},
                 step_seconds={"reference": clock["reference_steps"], "ours": clock["ours_steps"]},
                 speedup_by_median_step=median(clock["reference_steps"]) / max(median(clock["ours_steps"]), 1e-9),
                 memory_at_start_mb=clock["memory_at_start_mb"],
                 gpu_peak_memory_mb=clock.get("gpu_peak_memory_mb", {}),
                 note="samples/s over the timed steps only; ours reads cached vectors (the cache build is "
                      "timed apart, in cache_build); wall_seconds include model building and, for ours, "
                      "saving the model; peak memory covers a whole path; the reference runs first, what "
                      "it freed is handed back to the OS before ours starts (memory_at_start_mb: where "
                      "each began); speedup_by_median_step compares each path's median step, which a CPU "
                      "shared with other jobs disturbs less than the totals")
    report = BenchReport("train", "samples", ours, reference, setup)
    report.setup["coco_estimate"] = coco_estimate(bench.coco_captions, building.items_per_s, ours.items_per_s,
                                                  reference.items_per_s, bench.size)
    if show:
        report.show()
        _show_extras(report.setup)
    if report_path:
        report.save(report_path)
    return report


def _timed(whole: PathResult, clock: dict, key: str) -> PathResult:
    """The timed steps' figures, with the peak memory of the whole path (setup and saving included)."""
    clock[f"{key}_wall"] = whole.seconds
    return replace(whole, items=clock[f"{key}_items"], seconds=clock[f"{key}_seconds"])


# ----------------------------------------------------------------------------- the two paths

def ours_train(cache: EmbeddingCache, texts, rows, config, options: TrainOptions, warmup_steps: int,
               clock: dict) -> int:
    """`stylecap train`'s loop on the cached vectors. Its metrics log (one line a step) gives the time
    of the steps after the warm-up ones, measured by the loop itself."""
    _reset_gpu_peak()
    vectors = cache.vectors(texts)  # read back from the cache files, as a later epoch or run does
    model_dir = train(vectors, rows, config, options)
    elapsed = {}
    for line in (Path(options.out_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        elapsed[record["step"]] = record["elapsed_s"]
    timed = options.steps - warmup_steps
    clock["ours_seconds"] = elapsed[options.steps] - elapsed.get(warmup_steps, 0.0)
    clock["ours_steps"] = [elapsed[step] - elapsed.get(step - 1, 0.0) for step in range(warmup_steps + 1, options.steps + 1)]
    clock["ours_items"] = timed * options.batch_size
    clock["ours_precision"] = "bf16" if auto_precision() == "bf16" else "fp32"  # what `--mixed-precision auto` chose
    clock.setdefault("trainable", {})["ours"] = _trainable_in(model_dir)
    _record_gpu_peak(clock, "ours")
    return clock["ours_items"]


def reference_train(encoder, texts, rows, config, options: TrainOptions, warmup_steps: int, clock: dict) -> int:
    """Modelled on the paper's training code: at every step the batch's captions go through the CLIP
    text tower (frozen, fp32), and every weight of the LM is trained with AdamW, in fp32. The batches
    are the ones our loop sees, in the same order."""
    import time

    import torch
    import torch.nn.functional as F

    _reset_gpu_peak()
    torch.manual_seed(options.seed)
    model = build_model(replace(config, lora=False)).to(encoder.device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    clock.setdefault("trainable", {})["reference"] = sum(p.numel() for p in parameters)
    optimizer = torch.optim.AdamW(parameters, lr=options.lr, weight_decay=options.weight_decay)
    batches = iter(EpochBatches(len(rows), options.batch_size, options.seed, rank=0, world=1, start=0))
    started, steps = None, []
    for step in range(options.steps):
        begun = time.perf_counter()
        if step == warmup_steps:
            started = begun
        picked = [rows[i] for i in next(batches)]
        with torch.no_grad():
            tokens = encoder.tokenizer([texts[row.vector] for row in picked]).to(encoder.device)
            vectors = F.normalize(encoder.model.encode_text(tokens).float(), dim=-1)
        batch = model.batch_builder([row.input_text for row in picked], [row.target for row in picked])
        loss = model(clip_vecs=vectors, **{k: v.to(encoder.device) for k, v in batch.items()})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss.item()  # the paper's loop logs every step's loss; this also waits for the accelerator
        if step >= warmup_steps:
            steps.append(time.perf_counter() - begun)
    clock["reference_seconds"] = time.perf_counter() - started
    clock["reference_items"] = (options.steps - warmup_steps) * options.batch_size
    clock["reference_steps"] = steps
    _record_gpu_peak(clock, "reference")
    return clock["reference_items"]


def _trainable_in(model_dir: Path) -> int:
    """Parameters ours trained: the mapper and the LoRA adapter, counted in the saved files."""
    from safetensors.torch import load_file

    files = [Path(model_dir) / name for name in ("mapper.safetensors", "lora/adapter_model.safetensors")]
    return sum(tensor.numel() for path in files if path.exists() for tensor in load_file(str(path)).values())


def _release_freed_memory() -> None:
    """Hand what the reference path freed back to the OS, so that our path's memory figure is its own
    (glibc keeps freed heap memory for reuse unless asked to trim it)."""
    import ctypes
    import ctypes.util

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    libc = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(libc).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to trim this way
        pass


def _memory_mb() -> float:
    """This process's memory now (proportional set size where the OS reports it)."""
    import psutil

    info = psutil.Process().memory_full_info()
    return getattr(info, "pss", info.rss) / 2**20


def _reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _record_gpu_peak(clock: dict, key: str) -> None:
    import torch

    if torch.cuda.is_available():
        clock.setdefault("gpu_peak_memory_mb", {})[key] = torch.cuda.max_memory_allocated() / 2**20


# ----------------------------------------------------------------------------- models and summary

def _models(bench: TrainBench, tmp: Path) -> tuple[str, str, dict]:
    """(CLIP spec, LM name or folder, setup): the built-in tiny models, or random ones of given shapes
    written where `stylecap train` loads them from (a CLIP config JSON, a `save_pretrained` folder)."""
    setup: dict = {"size": bench.size}
    clip_spec, lm = "world", "tiny-t5"
    if bench.size == "paper" or bench.clip_cfg:
        import open_clip

        clip_cfg = bench.clip_cfg or open_clip.get_model_config(PAPER_CLIP)
        clip_spec = str(tmp / "clip.json")
        Path(clip_spec).write_text(json.dumps(clip_cfg))
        setup["clip_cfg"] = clip_cfg
    if bench.size == "paper" or bench.lm_cfg:
        lm_cfg = bench.lm_cfg or T5_BASE
        lm = str(tmp / "lm")
        model = random_model(clip_spec, 1, lm_cfg)  # only its LM and tokenizer are kept
        model.lm.save_pretrained(lm)
        model.tokenizer.save_pretrained(lm)
        setup["lm_cfg"] = lm_cfg
    setup.update(clip=clip_spec if clip_spec == "world" else "random weights, clip_cfg",
                 lm=lm if lm == "tiny-t5" else "random weights, lm_cfg")
    return clip_spec, lm, setup


def coco_estimate(captions: int, cache_rate: float, ours_rate: float, reference_rate: float, size: str) -> dict:
    """Hours of a one-epoch job on ``captions`` captions, from the rates measured in this run only."""
    ours = captions / cache_rate + captions / ours_rate
    reference = captions / reference_rate
    return {"captions": captions, "epochs": 1, "size": size, "ours_hours": ours / 3600,
            "reference_hours": reference / 3600, "ratio": reference / ours,
            "how": "captions / measured rates: ours = building the embedding cache (captions/s above) + the "
                   "training steps (ours samples/s); reference = its training steps (samples/s), which encode "
                   "as they go. Reading the data file, the same for both, is not counted (see bench scale)"}


def _show_extras(setup: dict) -> None:
    build, estimate = setup["cache_build"], setup["coco_estimate"]
    print(f"embedding cache build: {build['captions']} captions in {build['seconds']:.2f} s "
          f"({build['captions_per_s']:.0f} captions/s), once per CLIP and corpus")
    print(f"speedup by each path's median step: {setup['speedup_by_median_step']:.2f}x")
    if setup["gpu_peak_memory_mb"]:
        print("GPU peak memory (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in setup["gpu_peak_memory_mb"].items()))
    print(f"a COCO-sized job ({estimate['captions']:,} captions, 1 epoch, {estimate['size']} size) here: "
          f"ours {estimate['ours_hours']:.2f} h (cache build included), reference {estimate['reference_hours']:.2f} h, "
          f"×{estimate['ratio']:.2f}")
