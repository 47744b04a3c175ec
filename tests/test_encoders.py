"""CLIP loading through open_clip's own loaders (every spec form), normalised encoding, the cache."""
from __future__ import annotations

import json
import shutil

import open_clip
import pytest
import torch
from PIL import Image

from stylecap.core.encoders import load_clip, resolve_clip, save_clip
from stylecap.core.vectors import EmbeddingCache
from stylecap.errors import ModelError


@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory, tiny_clip_spec):
    """A tiny CLIP written in the open_clip folder layout (what `--clip FOLDER` and hubs use)."""
    torch.manual_seed(0)
    encoder = load_clip(tiny_clip_spec)
    cfg = json.loads(open(tiny_clip_spec).read())
    return save_clip(encoder.model, cfg, tmp_path_factory.mktemp("clip") / "tiny"), encoder


def test_vectors_are_normalised_float32(saved_clip):
    folder, _ = saved_clip
    encoder = load_clip(str(folder))
    texts = encoder.encode_texts(["a red circle", "a blue star above a green square"])
    images = encoder.encode_images([Image.new("RGB", (50, 40), (200, 0, 0)), Image.new("RGBA", (8, 8))])
    for vecs in (texts, images):
        assert vecs.dtype == torch.float32 and vecs.shape == (2, encoder.dim)
        assert torch.allclose(vecs.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.model.parameters())


def test_every_local_spec_form_loads_the_same_weights(saved_clip, tmp_path, tiny_clip_spec):
    folder, original = saved_clip
    reference = load_clip(str(folder)).encode_texts(["a small yellow hexagon"])
    # NAME:CHECKPOINT — the path a real name such as ViT-L-14:openai takes, with a registered local config
    config_path = tmp_path / "stylecap-test-tiny.json"
    config_path.write_text(open(tiny_clip_spec).read())
    open_clip.add_model_config(config_path)
    checkpoint = folder / "open_clip_model.safetensors"
    by_name = load_clip(f"stylecap-test-tiny:{checkpoint}")
    by_config = load_clip(f"{config_path}:{checkpoint}")
    for encoder in (by_name, by_config):
        assert torch.allclose(encoder.encode_texts(["a small yellow hexagon"]), reference, atol=1e-6)


def test_folder_identity_follows_the_model_files_only(saved_clip, tmp_path):
    folder = shutil.copytree(saved_clip[0], tmp_path / "copy")
    before = resolve_clip(str(folder)).identity
    (folder / "stats.json").write_text("{}")  # notes beside the model keep caches and runs valid
    assert resolve_clip(str(folder)).identity == before
    weights = folder / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one changed weight byte is another model
    weights.write_bytes(bytes(data))
    assert resolve_clip(str(folder)).identity != before


def test_real_pretrained_names_resolve_to_open_clip_tags():
    source = resolve_clip("ViT-L-14:openai")  # downloaded by open_clip when online; not loaded here
    assert (source.model_name, source.pretrained, source.identity) == ("ViT-L-14", "openai", "ViT-L-14:openai")
    assert resolve_clip("hf-hub:org/repo").model_name == "hf-hub:org/repo"


@pytest.mark.parametrize("spec, message", [
    ("NoSuchModel:openai", "unknown CLIP model"),
    ("ViT-L-14", "no pretrained weights named"),
    ("ViT-L-14:no-such-tag", "unknown pretrained tag"),
    ("ViT-L-14:/no/such/file.pt", "checkpoint file not found"),
    ("/no/such/config.json", "config not found"),
])
def test_bad_specs_are_model_errors(spec, message):
    with pytest.raises(ModelError, match=message):
        resolve_clip(spec)


def test_folder_without_config_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no open_clip_config.json"):
        resolve_clip(str(tmp_path))


def test_embedding_cache_reuses_and_resumes(saved_clip, tmp_path):
    folder, _ = saved_clip
    encoder = load_clip(str(folder))
    cache = EmbeddingCache(encoder, root=tmp_path / "cache", shard_size=2)
    texts = [f"a red circle number {i}" for i in range(5)]
    first = cache.vectors(texts)
    shards = sorted((tmp_path / "cache").rglob("shard-*.safetensors"))
    assert len(shards) == 3
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()  # as if the run had stopped while writing the second shard
    again = cache.vectors(texts)
    assert torch.equal(first, again)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in (shards[0], shards[2]))  # reused, not recomputed
    assert torch.allclose(first, encoder.encode_texts(texts), atol=1e-6)
