"""The training loop (accelerate): AdamW, warmup + linear decay, bf16 where supported, gradient
accumulation, checkpoints that resume exactly, Rich progress and a metrics log.

The loop trains on *vectors* and knows nothing of task formats: ``vectors`` holds CLIP vectors
(text vectors for CLOSE, image vectors for an image-trained reference) and each :class:`Row` points
at one of them, with optional input text and a target.

Run folder layout::

    run.json            the model config and training options of this run
    metrics.jsonl       one line per logged step: step, loss, lr, samples/s, elapsed
    checkpoints/step-N  resumable state (safetensors + JSON; no pickle)
    model/              the final self-describing model folder
"""
from __future__ import annotations

import json
import math
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from stylecap.core.model import CloseConfig, CloseModel, build_model
from stylecap.errors import UsageError
from stylecap.options import TrainOptions
from stylecap.progress import TrainProgress


@dataclass
class Row:
    vector: int  # index into the vectors tensor
    target: str
    input_text: str | None = None


def total_steps(n_rows: int, options: TrainOptions, world_size: int = 1) -> int:
    if options.steps:
        return options.steps
    per_step = options.batch_size * options.grad_accum * world_size
    return max(1, math.ceil(options.epochs * n_rows / per_step))


class EpochBatches(torch.utils.data.Sampler):
    """This process's share of micro-batches, in a seeded order, starting at a given micro-batch.

    The order depends only on (seed, epoch), so a resumed run sees exactly the batches the
    interrupted run would have seen.
    """

    def __init__(self, n_rows: int, batch_size: int, seed: int, rank: int, world: int, start: int):
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self.rank, self.world, self.start = rank, world, start
        self.per_epoch = max(1, n_rows // (batch_size * world))  # global batches per epoch (drop last)

    def __iter__(self):
        micro = self.start
        while True:
            epoch, position = divmod(micro, self.per_epoch)
            order = torch.randperm(self.n_rows, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            global_size = self.batch_size * self.world
            # Each process takes every world-th row of the global batch: with fewer rows than a global
            # batch (a small data set, many processes) every process still gets its share.
            begin = position * global_size
            yield order[begin:begin + global_size][self.rank::self.world].tolist()
            micro += 1


class RowBatches(torch.utils.data.Dataset):
    """Micro-batches as dataset items: the sampler yields index lists, collate tokenises them."""

    def __init__(self, vectors: torch.Tensor, rows: Sequence[Row], builder):
        self.vectors, self.rows, self.builder = vectors, rows, builder

    def __getitem__(self, indices: list[int]):
        # rows that are made a batch at a time (retrieval: one search per batch) say so with ``batch``
        rows = self.rows.batch(indices) if hasattr(self.rows, "batch") else [self.rows[i] for i in indices]
        batch = self.builder([r.input_text for r in rows], [r.target for r in rows])
        batch["clip_vecs"] = self.vectors[[r.vector for r in rows]]
        return batch

    def __len__(self):
        return len(self.rows)


def train(vectors: torch.Tensor, rows: Sequence[Row], config: CloseConfig, options: TrainOptions,
          model: CloseModel | None = None) -> Path:
    """Train and save the model under ``options.out_dir / 'model'``; returns that folder."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not rows:
        raise UsageError("nothing to train on: no examples", str(options.out_dir), "check the data file")
    out = Path(options.out_dir)
    # cpu=True without CUDA lets a `torchrun` launch on CPU form a gloo process group.
    precision = _precision(options.mixed_precision)
    _allow_precision(precision)
    accelerator = Accelerator(mixed_precision=precision,
                              gradient_accumulation_steps=options.grad_accum, cpu=not torch.cuda.is_available())
    if len(rows) < accelerator.num_processes:  # a process without rows would have no batch to pad
        raise UsageError(f"{len(rows)} training example(s) cannot be shared by {accelerator.num_processes} processes: "
                         "each needs at least one", str(options.out_dir),
                         f"launch at most {len(rows)} process(es), or add data")
    set_seed(options.seed)
    run_meta = {"config": asdict(config), "options": _jsonable(asdict(options)), "rows": len(rows)}
    _check_or_write_run(out, run_meta, options.resume, accelerator.is_main_process)

    model = model or build_model(config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    steps = total_steps(len(rows), options, accelerator.num_processes)
    warmup = int(options.warmup * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _warmup_linear(s, warmup, steps))
    # The scheduler is stepped by hand once per optimiser step (not prepared: accelerate would step it
    # once per process, but ``steps`` already counts global optimiser steps).
    model, optimizer = accelerator.prepare(model, optimizer)

    step = 0
    checkpoint = latest_checkpoint(out) if options.resume else None
    if checkpoint:
        step = load_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler,
                               accelerator.process_index)
    if options.resume and accelerator.is_main_process:  # also with no checkpoint yet: lines of a killed start
        _truncate_metrics(out / "metrics.jsonl", step)
    sampler = EpochBatches(len(rows), options.batch_size, options.seed, accelerator.process_index,
                           accelerator.num_processes, start=step * options.grad_accum)
    # A private generator: creating the iterator must not draw from the global RNG, whose restored state
    # is what makes a resumed run match an uninterrupted one.
    loader = torch.utils.data.DataLoader(RowBatches(vectors, rows, accelerator.unwrap_model(model).batch_builder),
                                         sampler=sampler, batch_size=None, num_workers=options.num_workers,
                                         generator=torch.Generator().manual_seed(options.seed))
    _loop(accelerator, model, optimizer, scheduler, loader, step, steps, options)
    final = out / "model"
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save(final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _loop(accelerator, model, optimizer, scheduler, loader, step, steps, options) -> None:
    out = Path(options.out_dir)
    model.train()
    log_path = out / "metrics.jsonl"
    losses, samples, started = [], 0, time.perf_counter()
    batches = iter(loader)
    with TrainProgress(steps, step, enabled=options.progress and accelerator.is_main_process) as bar:
        try:
            while step < steps:
                for _ in range(options.grad_accum):
                    batch = next(batches)
                    with accelerator.accumulate(model):
                        loss = model(**{k: v.to(accelerator.device) for k, v in batch.items()})
                        accelerator.backward(loss)
                        optimizer.step()
                        optimizer.zero_grad()
                    losses.append(loss.detach())
                    samples += batch["clip_vecs"].shape[0] * accelerator.num_processes
                scheduler.step()
                step += 1
                if step % options.log_every == 0 or step == steps:
                    mean_loss = accelerator.reduce(torch.stack(losses).mean(), "mean").item()
                    elapsed = time.perf_counter() - started
                    record = {"step": step, "loss": round(mean_loss, 5), "lr": scheduler.get_last_lr()[0],
                              "samples_per_s": round(samples / max(elapsed, 1e-9), 2), "elapsed_s": round(elapsed, 2)}
                    if accelerator.is_main_process:
                        with open(log_path, "a") as handle:
                            handle.write(json.dumps(record) + "\n")
                    bar.update(step, record)
                    losses = []
                if step % options.checkpoint_every == 0 and step < steps:
                    save_checkpoint(out, step, accelerator, model, optimizer, scheduler, options.keep_checkpoints)
        except KeyboardInterrupt:
            if step > 0:  # keep what was learned: --resume continues from here
                save_checkpoint(out, step, accelerator, model, optimizer, scheduler, options.keep_checkpoints)
            raise


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from: they will be written again."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines()
                if (logged := _logged_step(line)) is not None and logged <= step]
        _write_atomically(path, "".join(line + "\n" for line in kept))


def _logged_step(line: str) -> int | None:
    """The step of a metrics line; None for a line a kill cut short."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _warmup_linear(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def _precision(choice: str) -> str:
    return auto_precision() if choice == "auto" else choice


def _allow_precision(precision: str) -> None:
    """accelerate keeps one state per process and refuses another precision in it, so a process that
    trains twice (the demo in full precision after a `train` in bf16; tests; notebooks) would fail.
    Its reset of that state keeps the process group, so a distributed run is unaffected."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def auto_precision() -> str:
    """What ``--mixed-precision auto`` trains in: bf16 autocast where the hardware computes in bf16
    natively (a capable GPU; a CPU with AVX-512 BF16 or AMX, where a training step measured 1.2×
    faster on the tiny LM and 1.6× on t5-base, with the same loss curve), else full precision."""
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if _cpu_computes_bf16() else "no"


def _cpu_computes_bf16() -> bool:
    # torch has no public test for this yet: its CPU-capability probes, read defensively
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def _jsonable(data: dict) -> dict:
    return json.loads(json.dumps(data, default=str))


def _check_or_write_run(out: Path, meta: dict, resume: bool, is_main: bool) -> None:
    """A resumed run must be the same run; a fresh run must not silently overwrite an older one."""
    path = out / "run.json"
    if path.exists() and resume:
        saved = json.loads(path.read_text())
        if saved["config"] != meta["config"] or saved["rows"] != meta["rows"]:
            raise UsageError("--resume with a different model config or data than the saved run", str(path),
                             "use the same options, or a new --out folder")
        return
    if path.exists() and latest_checkpoint(out) is not None and not resume:
        raise UsageError("the output folder holds an unfinished run", str(out),
                         "add --resume to continue it, or choose a new --out folder")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        _write_atomically(path, json.dumps(meta, indent=2))


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")  # step-N.tmp is a checkpoint still (or never) being written


def complete_checkpoints(out: Path) -> list[Path]:
    """Published checkpoints, oldest first: renamed from their .tmp folder, so every file is in place."""
    found = [p for p in (Path(out) / "checkpoints").glob("step-*")
             if CHECKPOINT_NAME.match(p.name) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))


def latest_checkpoint(out: Path) -> Path | None:
    done = complete_checkpoints(out)
    return done[-1] if done else None


def save_checkpoint(out: Path, step: int, accelerator, model, optimizer, scheduler, keep: int) -> Path:
    """Everything a resume needs, as safetensors + JSON, published atomically by renaming its folder."""
    from safetensors.torch import save_file

    folder = Path(out) / "checkpoints" / f"step-{step:07d}"
    tmp = folder.with_name(folder.name + ".tmp")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(accelerator.unwrap_model(model).trainable_state(), str(tmp / "trainable.safetensors"))
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(meta))
        (tmp / "scheduler.json").write_text(json.dumps(_jsonable(scheduler.state_dict())))
    accelerator.wait_for_everyone()
    _save_rng(tmp, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps({"step": step, "processes": accelerator.num_processes}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
        stale = [p for p in folder.parent.glob("step-*") if not CHECKPOINT_NAME.match(p.name)]  # killed saves
        for old in complete_checkpoints(out)[:-keep] + stale:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(folder: Path, model: CloseModel, optimizer, scheduler, rank: int) -> int:
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    missing, unexpected = model.load_state_dict(load_file(str(folder / "trainable.safetensors")), strict=False)
    if unexpected:
        raise UsageError("checkpoint does not fit this model", str(folder), "resume with the same options")
    meta = json.loads((folder / "optimizer.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), meta))
    scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
    _load_rng(folder, rank)
    return int(state["step"])


def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {"param_groups": state_dict["param_groups"], "scalars": {}}
    for param_id, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                meta["scalars"][f"{param_id}.{key}"] = value
    return tensors or {"_empty": torch.zeros(0)}, _jsonable(meta)


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        if flat == "_empty":
            continue
        param_id, key = flat.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _save_rng(folder: Path, rank: int) -> None:
    import numpy as np
    from safetensors.torch import save_file

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(folder / f"rng-{rank}.safetensors"))
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    (folder / f"rng-{rank}.json").write_text(json.dumps({
        "python": [version, list(mt_state), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}))


def _load_rng(folder: Path, rank: int) -> None:
    import numpy as np
    from safetensors.torch import load_file

    path = folder / f"rng-{rank}.safetensors"
    if not path.exists():  # resumed with a different number of processes: keep seeded state
        return
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    saved = json.loads((folder / f"rng-{rank}.json").read_text())
    version, mt_state, gauss = saved["python"]
    random.setstate((version, tuple(mt_state), gauss))
    kind, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
