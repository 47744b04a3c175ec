"""A text memory: the CLIP text vectors of a model's training texts, searched exactly in batches.

A captioner trained on text alone reads text vectors; at test time it meets image vectors, which lie
elsewhere (the modality gap). Two levers use the training texts themselves to close that gap, with
no image anywhere in training:

- *projection* (DeCap, ICLR 2023): at test time the image vector is replaced by the
  softmax(cos / τ)-weighted mix of the ``k`` memory vectors nearest it, so the decoder reads a
  vector from the space it was trained on;
- *retrieval* (the idea behind IFCap and MeaCap): the decoder gets the ``k`` training texts nearest
  its input vector as extra input text. In training the query is the adapter's noisy text vector
  and the texts of the example's own item (its image, or itself) are left out, so training sees
  neighbours as imperfect as an image's; at test time the query is the image vector.

The memory is saved inside the model folder (``memory/``: fp16 vectors + the texts), so a model
with a memory lever loads from its path alone; ``stylecap.json`` also records the embedding-cache
key the vectors came from (CLIP identity + corpus digest). Search is exact (a matrix product per
block of the memory, a running top-k): the shapes world's 38k 128-d captions cost milliseconds per
batch; 300k 768-d texts cost about 2 s per batch of 32 on one busy CPU thread, and a fraction of that
on a GPU, so no approximate index (and no extra dependency) is needed at captioning scale.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from stylecap.core.tasks import Examples
from stylecap.errors import ModelError
from stylecap.paths import text_digest

MEMORY_DIR = "memory"
SEPARATOR = " | "  # between retrieved texts, and between the task's own input text and them
BLOCK = 65536  # memory rows scored at once: bounds the score matrix to batch × BLOCK


class TextMemory:
    """Normalised text vectors (kept in fp16) with their texts and, for training, item groups."""

    def __init__(self, vectors: torch.Tensor, texts: Sequence[str], groups: torch.Tensor | None = None):
        if len(vectors) != len(texts) or not len(texts):
            raise ModelError(f"a text memory needs one text per vector ({len(texts)} texts, {len(vectors)} vectors)",
                             MEMORY_DIR, "retrain the model")
        self.vectors = F.normalize(vectors.float(), dim=-1).half()
        self.texts = list(texts)
        self.groups = groups
        self._on: dict[str, torch.Tensor] = {}  # the vectors on each device a query came from

    def __len__(self) -> int:
        return len(self.texts)

    def _vectors_on(self, device: torch.device) -> torch.Tensor:
        """The vectors on ``device``: fp32 on a CPU (converting fp16 blocks at every search cost more
        than the search itself), fp16 on an accelerator."""
        key = str(device)
        if key not in self._on:
            self._on[key] = self.vectors.to(device, torch.float32 if device.type == "cpu" else torch.float16)
        return self._on[key]

    def search(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosines, indices) of the ``k`` memory rows nearest each query, best first. ``exclude``
        holds one group per query: memory rows of that group are never returned."""
        queries = F.normalize(queries.float(), dim=-1)
        memory = self._vectors_on(queries.device)
        k = min(k, len(self))
        best = torch.full((len(queries), 0), float("-inf"), device=queries.device)
        where = torch.zeros((len(queries), 0), dtype=torch.long, device=queries.device)
        for start in range(0, len(self), BLOCK):
            block = memory[start:start + BLOCK]
            scores = (queries.to(block.dtype) @ block.T).float()
            if exclude is not None:
                groups = self.groups[start:start + BLOCK].to(queries.device)
                scores.masked_fill_(groups[None, :] == exclude.to(queries.device)[:, None], float("-inf"))
            top = scores.topk(min(k, scores.shape[1]), dim=1)
            best, order = torch.cat([best, top.values], 1).topk(k, dim=1)
            where = torch.cat([where, top.indices + start], 1).gather(1, order)
        return best, where

    def project(self, queries: torch.Tensor, k: int, tau: float) -> torch.Tensor:
        """Each query replaced by the softmax(cos / τ)-weighted mix of its ``k`` nearest memory
        vectors, renormalised (DeCap's projection, restricted to the nearest k)."""
        scores, where = self.search(queries, k)
        weights = torch.softmax(scores / tau, dim=1)
        mixed = (weights[..., None] * self._vectors_on(queries.device)[where].float()).sum(1)
        return F.normalize(mixed, dim=-1).to(queries.dtype)

    def retrieve(self, queries: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> list[list[str]]:
        """The ``k`` memory texts nearest each query, best first."""
        scores, where = self.search(queries, k, exclude)
        return [[self.texts[i] for i, s in zip(row.tolist(), cos.tolist(), strict=True) if s > float("-inf")]
                for row, cos in zip(where, scores, strict=True)]

    def identity(self) -> dict:
        """What a saved model records about its memory."""
        return {"entries": len(self), "dim": int(self.vectors.shape[1]), "corpus_digest": text_digest(self.texts)}

    def save(self, folder: Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"vectors": self.vectors.contiguous()}, str(folder / "vectors.safetensors"))
        with open(folder / "texts.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(text, ensure_ascii=False) + "\n" for text in self.texts)
        return folder


def load_memory(folder: Path) -> TextMemory:
    """A memory saved by :meth:`TextMemory.save` (inside a model folder)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    vectors_file, texts_file = folder / "vectors.safetensors", folder / "texts.jsonl"
    if not vectors_file.is_file() or not texts_file.is_file():
        raise ModelError("the model uses a text memory but its memory/ folder is missing or incomplete",
                         str(folder), "copy the whole model folder, or retrain the model")
    try:
        texts = [json.loads(line) for line in texts_file.read_text(encoding="utf-8").splitlines() if line]
        vectors = load_file(str(vectors_file))["vectors"]
    except (ValueError, OSError) as exc:
        raise ModelError(f"the model's text memory is damaged: {exc}", str(folder), "retrain the model") from None
    return TextMemory(vectors, texts)


# ----------------------------------------------------------------------------- building one

def memory_from_examples(examples: Examples, vectors: torch.Tensor, size: int | None = None,
                         seed: int = 0) -> tuple[TextMemory, torch.Tensor]:
    """The memory of a training set whose ``vectors[i]`` encodes ``examples.values("clip_text")[i]``,
    and the item group of every vector (a training query leaves its own item's texts out).

    An item is the example's image when it has one (the other captions of the same picture would
    give its content away), else its id. ``size`` keeps a seeded sample of that many texts.
    """
    texts = examples.values("clip_text")
    first: dict[int, str] = {}
    for code, image, item in zip(examples.codes("clip_text"), examples.column("image"), examples.column("id"),
                                 strict=True):
        first.setdefault(code, image or f"id:{item}")
    numbering: dict[str, int] = {}
    groups = torch.tensor([numbering.setdefault(first[code], len(numbering)) for code in range(len(texts))])
    keep = torch.arange(len(texts))
    if size is not None and size < len(texts):
        keep = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    memory = TextMemory(vectors[keep], [texts[i] for i in keep.tolist()], groups[keep])
    return memory, groups


def memory_settings(project: bool, tau: float, project_k: int, retrieve_k: int) -> dict:
    """The levers a model applies, as recorded in its config (empty: no memory)."""
    if not project and not retrieve_k:
        return {}
    return {"project": project, "tau": tau, "project_k": project_k, "retrieve_k": retrieve_k}


def with_retrieved(input_text: str | None, retrieved: list[str]) -> str:
    """The decoder's input text: the task's own input (question, article) first, so truncation
    never cuts it, then the retrieved texts."""
    return SEPARATOR.join(([input_text] if input_text else []) + retrieved)


def read_through(memory: TextMemory | None, settings: dict, vectors: torch.Tensor,
                 input_texts: list[str | None]) -> tuple[torch.Tensor, list[str | None]]:
    """What the decoder reads at test time: retrieval queried with the given (image) vectors, then
    the vectors projected onto the memory, as the model's settings say."""
    if memory is None or not settings:
        return vectors, input_texts
    if settings.get("retrieve_k"):
        found = memory.retrieve(vectors, settings["retrieve_k"])
        input_texts = [with_retrieved(text, near) for text, near in zip(input_texts, found, strict=True)]
    if settings.get("project"):
        vectors = memory.project(vectors, settings["project_k"], settings["tau"])
    return vectors, input_texts


class RetrievalRows(Sequence):
    """Training rows (``stylecap.core.train.Row``) whose input text gains the ``k`` memory texts
    nearest a noisy version of the row's text vector (the adapter in training mode: its shift and
    its noise), the row's own item left out.

    Rows are made a micro-batch at a time (``batch``), so each batch is one search. The noise of a
    query comes from a generator seeded by the seed and the batch's rows: a resumed run retrieves
    exactly what the first would have, and the global random stream the training loop restores is
    not touched.
    """

    def __init__(self, rows: Sequence, vectors: torch.Tensor, memory: TextMemory, groups: torch.Tensor,
                 adapter: torch.nn.Module, k: int, seed: int = 0):
        self.rows, self.vectors, self.memory, self.groups = rows, vectors, memory, groups
        self.adapter, self.k, self.seed = adapter, k, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.batch([i])[0]

    def batch(self, indices: list[int]) -> list:
        rows = [self.rows[i] for i in indices]
        codes = torch.tensor([row.vector for row in rows])
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(hash((self.seed, tuple(indices))) % 2 ** 63)
            training = self.adapter.training
            queries = self.adapter.train()(self.vectors[codes].float())
            self.adapter.train(training)
        found = self.memory.retrieve(queries, self.k, exclude=self.groups[codes])
        return [replace(row, input_text=with_retrieved(row.input_text, near))
                for row, near in zip(rows, found, strict=True)]
