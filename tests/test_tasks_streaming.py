"""Readers and the vectors cache keep a bounded amount in memory, whatever the corpus size: JSON is
parsed a record at a time, a reader's values are spilled to memory-mapped files, and training reads
cached vectors through a view of the shards. No test here reads a timing."""
from __future__ import annotations

import json
import tracemalloc

import pytest
import torch

from stylecap.core.tasks import Example, Examples, ReadOptions, get_task, spill
from stylecap.core.tasks.spill import SpilledValues
from stylecap.core.tasks.textfiles import json_records
from stylecap.core.vectors import CachedVectors, EmbeddingCache
from stylecap.errors import InputError
from stylecap.experiments.scale import write_caption_data


def test_streamed_json_records_are_what_json_load_gives(tmp_path):
    data = write_caption_data(tmp_path, 2_000)  # a Karpathy file as the bench writes it
    whole = json.loads(data.karpathy.read_text())
    assert list(json_records(data.karpathy, "images")) == whole["images"]
    bare = tmp_path / "records.json"
    bare.write_text(json.dumps(whole["images"][:50]))
    assert list(json_records(bare)) == list(json_records(bare, "images")) == whole["images"][:50]
    empty = tmp_path / "empty.json"
    empty.write_text('{"images": [], "dataset": "coco"}')
    assert list(json_records(empty, "images")) == []


@pytest.mark.parametrize(("text", "message"), [
    ('{"images": [{"filename": "a.jpg"}, {"file', "not valid JSON"),
    ('{"dataset": "coco"}', "expected a list of records under 'images'"),
    ('{"images": {"a": 1}}', "expected a list of records under 'images'"),
    ('{"questions": [{"question": "why?", "question_id": 1}]}', "this looks like VQA questions"),
    (b'{"images": ["\xff"]}', "not valid JSON"),
])
def test_streamed_json_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "dataset_coco.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError, match=message):
        list(json_records(path, "images"))


def test_a_reader_holds_no_python_list_of_its_captions(tmp_path, monkeypatch):
    """What a read of N long captions leaves allocated is a few bytes per caption, far below the
    captions themselves: they lie in memory-mapped files, one block at most held as Python strings."""
    monkeypatch.setattr(spill, "BLOCK", 1024)
    count = 20_000
    captions = [f"caption {i}: " + "a shape beside another shape on a plain ground " * 20 for i in range(count)]
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(captions) + "\n")
    get_task("caption").read(path, ReadOptions(limit=3000))  # modules loaded (Arrow's on a first spill) before counting
    tracemalloc.start()
    try:
        examples = get_task("caption").read(path, ReadOptions())
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    texts = examples.values("clip_text")
    assert len(examples) == len(texts) == count and examples[count - 1].clip_text == captions[-1].strip()
    assert held < 0.25 * sum(len(c) for c in captions), held  # the captions alone would be more than all of it
    assert isinstance(texts, SpilledValues) and len(texts._pending) < 1024


def test_spilled_values_read_as_the_list_they_were_given(monkeypatch):
    values = [f"v{i % 7}" if i % 5 else None for i in range(23)] + [("a", "b"), ("c",)]
    column = SpilledValues(block=4)
    for value in values:
        column.append(value)
    assert len(column) == len(values) and list(column) == values
    assert [column[i] for i in range(-len(values), len(values))] == values + values
    assert column[3:21] == values[3:21] and column[::3] == values[::3] and column.last == ("c",)
    assert column.spilled_bytes() > 0
    with pytest.raises(IndexError):
        column[len(values)]


def test_examples_with_spilled_values_keep_each_clip_text_once(monkeypatch):
    monkeypatch.setattr(spill, "BLOCK", 8)
    views = [Example(target=f"answer {q % 3}", clip_text=f"caption {c}", image=f"img{q % 7}.jpg",
                     input_text=f"question {q}", id=str(q), refs=["yes", "no"]) for q in range(100) for c in range(5)]
    examples = Examples(views)
    assert list(examples) == views and examples[-1] == views[-1] and list(examples[10:20]) == views[10:20]
    assert list(examples.values("clip_text")) == [f"caption {c}" for c in range(5)]
    assert list(examples.column("image")) == [v.image for v in views]


class CountingEncoder:
    """Stands in for CLIP: deterministic vectors, and a count of the texts encoded."""

    identity, dim = "counting", 6

    def __init__(self):
        self.encoded = 0

    def encode_texts(self, texts):
        self.encoded += len(texts)
        return torch.stack([torch.arange(self.dim, dtype=torch.float32) + hash(t) % 1000 for t in texts])


def test_the_vectors_view_returns_what_the_concatenated_tensor_holds(tmp_path):
    texts = [f"text {i}" for i in range(23)]
    cache = EmbeddingCache(CountingEncoder(), root=tmp_path, shard_size=5)
    whole = cache.vectors(texts)
    view = cache.view(texts)
    assert cache.encoder.encoded == len(texts)  # the second call read the shards
    assert isinstance(view, CachedVectors) and view.shape == whole.shape and len(view) == len(texts)
    picks = [22, 0, 4, 5, 5, 17, -1]
    assert torch.equal(view[picks], whole[picks]) and torch.equal(view[torch.tensor(picks)], whole[picks])
    assert torch.equal(view[3:19], whole[3:19]) and torch.equal(view[7], whole[7]) and torch.equal(view[-2], whole[-2])
    assert torch.equal(view[torch.tensor([[1, 2], [20, 21]])], whole[torch.tensor([[1, 2], [20, 21]])])
    assert torch.equal(view.tensor(), whole) and view[[]].shape == (0, 6)
    with pytest.raises(IndexError):
        view[[23]]
    assert EmbeddingCache(CountingEncoder(), root=tmp_path).view([]).shape == (0, 6)
