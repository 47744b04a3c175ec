"""`stylecap bench scale`: what reading, embedding, training and the corpus pass cost as the number of
captions grows (10k, 100k, 1M by default), from a Karpathy-format file of the shapes world's captions.

Each (size, stage) runs in a fresh Python process, so its peak resident memory is its own: the
kernel's high-water mark (``ru_maxrss``), which counts file pages that were memory-mapped and touched
as well as the process's own memory. The stages:

* ``read``    the caption reader on the file, cold (the JSON is parsed a record at a time; the values it
              keeps are spilled to memory-mapped Arrow files as they grow)
* ``reread``  the same reader again (the file in the page cache, as every later command finds it)
* ``cache``   the embedding cache build: CLIP text vectors of the distinct captions, sharded safetensors
* ``train``   `stylecap train` on the file, reading the cache just built, for a capped number of steps:
              the point is its memory, which is set by the data it holds, not by how many steps it runs
* ``corpus``  the corpus-level filters of `generate` (exact and near duplicates, overused n-grams)
              over the captions as one stream

The read and corpus stages run without torch (as `generate` does); the cache and train stages run
in :mod:`stylecap.experiments.scale_training`, which loads it.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from stylecap.core.tasks import ReadOptions, get_task
from stylecap.core.tasks.spill import total_spilled_bytes
from stylecap.experiments.report import environment
from stylecap.generate.filters import BATCH, CorpusFilter
from stylecap.generate.styles import Filters
from stylecap.options import SCALE_STAGES, ScaleBench
from stylecap.world import language
from stylecap.world.scenes import sample_scene, stream

LIGHT_STAGES = ("read", "reread", "corpus")  # run by this module, without torch; the others by scale_training
# Targets from the issue, for the step from one size to the next ten times larger.
RSS_GROWTH_TARGET = 1.5  # peak RSS at 10× ≤ 1.5 × the smaller size's + what is memory-mapped at 10×
TIME_RATIO_TARGET = 12.0  # seconds at 10× ≤ 12 × the smaller size's


# ----------------------------------------------------------------------------- the data

@dataclass
class CaptionData:
    karpathy: Path  # dataset_coco.json, every image in split "train"
    text: Path  # the same captions, one a line (the corpus stage's stream)
    captions: int
    images: int


def world_captions(seed: int = 0) -> Iterator[tuple[int, list[str]]]:
    """(image id, its five captions) for image 0, 1, 2 … of the shapes world: text only, no rendering,
    each image from its own random streams as `stylecap world build` draws them."""
    image_id = 0
    while True:
        scene = sample_scene(stream(seed, image_id, "scene"), image_id, "train")
        yield image_id, [described.text for described in language.captions(scene, stream(seed, image_id, "language"))]
        image_id += 1


def write_caption_data(folder: Path, count: int, seed: int = 0) -> CaptionData:
    """Write ``count`` captions as a Karpathy-format file and as plain lines, streaming (the file of a
    million captions is never held in memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    karpathy, text = folder / "dataset_coco.json", folder / "captions.txt"
    written = images = 0
    with open(karpathy, "w", encoding="utf-8") as out, open(text, "w", encoding="utf-8") as lines:
        out.write('{"dataset":"coco","images":[')
        for image_id, captions in world_captions(seed):
            captions = captions[:count - written]
            sentences = [{"raw": raw, "tokens": raw.lower().rstrip(".").split(), "imgid": image_id,
                          "sentid": written + k} for k, raw in enumerate(captions)]
            record = {"filepath": "train", "filename": f"{image_id}.png", "split": "train", "imgid": image_id,
                      "cocoid": image_id, "sentids": [s["sentid"] for s in sentences], "sentences": sentences}
            out.write(("," if images else "") + json.dumps(record, separators=(",", ":")))
            lines.write("".join(raw + "\n" for raw in captions))
            written, images = written + len(captions), images + 1
            if written >= count:
                break
        out.write("]}")
    return CaptionData(karpathy, text, written, images)


# ----------------------------------------------------------------------------- the run

def bench_scale(bench: ScaleBench, show: bool = True) -> dict:
    """Every stage at every size, each in a fresh process; writes ``scale.json`` and ``scale.png``."""
    bench.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="stylecap-scale-") as tmp:
        for count in bench.sizes:
            folder = Path(tmp) / f"captions-{count}"
            started = time.perf_counter()
            data = write_caption_data(folder / "data", count, bench.seed)
            if show:
                print(f"{count:,} captions: data written in {time.perf_counter() - started:.1f} s "
                      f"({data.karpathy.stat().st_size / 2**20:.1f} MB of JSON)", flush=True)
            for stage in (s for s in SCALE_STAGES if s in bench.stages):
                row = {"captions": count, "stage": stage, **run_stage(stage, data, folder, bench)}
                rows.append(row)
                if show:
                    print(f"  {stage:7s} {row['seconds']:9.2f} s   peak RSS {row['peak_rss_mb']:8.0f} MB "
                          f"(start {row['start_rss_mb']:.0f} MB, mapped {row['mapped_mb']:.0f} MB)", flush=True)
            shutil.rmtree(folder, ignore_errors=True)  # the next size needs the disk more
    report = {"benchmark": "scale", "settings": {**asdict(bench), "out": str(bench.out)}, "rows": rows,
              "scaling": scaling(rows), "environment": environment(),
              "note": "peak_rss_mb is the stage process's ru_maxrss (file pages it touched included); "
                      "start_rss_mb the same before the stage's work, after imports; mapped_mb the files the "
                      "stage memory-maps (the readers' spilled values, embedding shards)"}
    (bench.out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, bench.out / "scale.png")
    if show:
        show_scaling(report["scaling"])
        print(f"report: {bench.out / 'scale.json'}, plot: {bench.out / 'scale.png'}")
    return report


def run_stage(stage: str, data: CaptionData, folder: Path, bench: ScaleBench) -> dict:
    """One stage in a fresh process; its caches (spilled reader values, embeddings, built-in LMs) live
    in ``folder``."""
    module = "stylecap.experiments.scale" if stage in LIGHT_STAGES else "stylecap.experiments.scale_training"
    arguments = {"karpathy": str(data.karpathy), "text": str(data.text), "clip": bench.clip,
                 "steps": bench.train_steps, "batch_size": bench.batch_size, "run": str(folder / "run")}
    env = {**os.environ, "STYLECAP_CACHE": str(folder / "cache"), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if bench.threads:
        env["OMP_NUM_THREADS"] = str(bench.threads)  # torch's CPU threads are set from it at start
    done = subprocess.run([sys.executable, "-m", module, stage, json.dumps(arguments)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"bench scale: stage {stage} at {data.captions} captions exited {done.returncode}: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_main(stages: dict[str, Callable[..., dict]], argv: list[str]) -> None:
    """The body of a stage process: run one stage, print its figures as one JSON line."""
    stage, arguments = argv[0], json.loads(argv[1])
    start = max_rss_mb()
    result = stages[stage](**arguments)
    result.update(start_rss_mb=start, peak_rss_mb=max_rss_mb())
    result.setdefault("mapped_mb", 0.0)
    print(json.dumps(result))


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def spilled_mb() -> float:
    """What this process's readers spilled their values to (memory-mapped files)."""
    return total_spilled_bytes() / 2**20


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20 if Path(folder).exists() else 0.0


# ----------------------------------------------------------------------------- the light stages

def read_stage(karpathy: str, **_) -> dict:
    """The caption reader, as `stylecap train --task caption --split train` calls it."""
    started = time.perf_counter()
    examples = get_task("caption").read(Path(karpathy), ReadOptions(split="train"))
    seconds = time.perf_counter() - started
    spilled = spilled_mb()
    return {"seconds": seconds, "examples": len(examples), "distinct_captions": len(examples.values("clip_text")),
            "json_mb": Path(karpathy).stat().st_size / 2**20, "spilled_mb": spilled, "mapped_mb": spilled}


def corpus_stage(text: str, **_) -> dict:
    """The corpus-level filters over the captions as one stream of records, batch by batch."""
    judge, drops, kept = CorpusFilter(Filters()), Counter(), 0
    started = time.perf_counter()
    for batch in _record_batches(Path(text)):
        for verdict in judge.judge(batch):
            if verdict is None:
                kept += 1
            else:
                drops[verdict] += 1
    return {"seconds": time.perf_counter() - started, "kept": kept, "dropped": dict(drops)}


def _record_batches(path: Path) -> Iterator[list[dict]]:
    batch: list[dict] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            batch.append({"id": f"{number:09d}", "text": line.rstrip("\n")})
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


LIGHT = {"read": read_stage, "reread": read_stage, "corpus": corpus_stage}


# ----------------------------------------------------------------------------- the summary

@dataclass
class Step:
    """How one stage's cost grew from one size to the next."""

    stage: str
    smaller: int
    larger: int
    time_ratio: float
    rss_ratio: float
    rss_limit_mb: float  # RSS_GROWTH_TARGET × the smaller size's peak + what the larger one maps
    peak_rss_mb: float  # at the larger size
    checks: dict = field(default_factory=dict)


def scaling(rows: list[dict]) -> list[dict]:
    """For each stage, the step between its two largest sizes, checked against the targets (scaled to
    the size ratio when it is not 10×)."""
    steps = []
    for stage in dict.fromkeys(row["stage"] for row in rows):
        ordered = sorted((row for row in rows if row["stage"] == stage), key=lambda row: row["captions"])
        if len(ordered) < 2:
            continue
        small, large = ordered[-2], ordered[-1]
        growth = large["captions"] / small["captions"]
        limit = RSS_GROWTH_TARGET * small["peak_rss_mb"] + large["mapped_mb"]
        time_ratio = large["seconds"] / max(small["seconds"], 1e-9)
        step = Step(stage, small["captions"], large["captions"], time_ratio,
                    large["peak_rss_mb"] / small["peak_rss_mb"], limit, large["peak_rss_mb"])
        step.checks = {"rss": large["peak_rss_mb"] <= limit,
                       "time": time_ratio <= TIME_RATIO_TARGET * growth / 10}
        steps.append(asdict(step))
    return steps


def show_scaling(steps: list[dict]) -> None:
    for step in steps:
        verdict = ", ".join(f"{name} {'ok' if passed else 'MISSED'}" for name, passed in step["checks"].items())
        print(f"{step['stage']:7s} {step['smaller']:,} → {step['larger']:,}: time ×{step['time_ratio']:.1f}, "
              f"peak RSS {step['peak_rss_mb']:.0f} MB (limit {step['rss_limit_mb']:.0f} MB) — {verdict}")


def plot(rows: list[dict], path: Path) -> None:
    """Seconds and peak RSS against captions, one line per stage, log-log."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, (seconds, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in dict.fromkeys(row["stage"] for row in rows):
        ordered = sorted((row for row in rows if row["stage"] == stage), key=lambda row: row["captions"])
        sizes = [row["captions"] for row in ordered]
        seconds.plot(sizes, [max(row["seconds"], 1e-3) for row in ordered], marker="o", label=stage)
        memory.plot(sizes, [row["peak_rss_mb"] for row in ordered], marker="o", label=stage)
    for axis, label in ((seconds, "seconds"), (memory, "peak RSS (MB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("captions")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    seconds.legend()
    figure.suptitle("stylecap bench scale")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    stage_main(LIGHT, sys.argv[1:])
