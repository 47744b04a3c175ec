"""The CLOSE model core on tiny local LMs: forward/backward, LoRA, noise, save/load, errors."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from stylecap.core.gap import NoiseAdapter, expected_cosine
from stylecap.core.model import CloseConfig, build_model, load_model
from stylecap.errors import ModelError

LMS = ["tiny-t5", "tiny-gpt2"]


def unit(n: int, dim: int = 32, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module", params=LMS)
def lora_model(request):
    torch.manual_seed(0)
    return build_model(CloseConfig(clip="test", clip_dim=32, lm=request.param, noise=0.1))


@pytest.mark.parametrize("with_input", [False, True])
def test_forward_backward_reaches_only_mapper_and_lora(lora_model, with_input):
    model = lora_model.train()
    model.zero_grad()
    inputs = ["what colour is the star?", "is there a circle?"] if with_input else [None, None]
    batch = model.batch_builder(inputs, ["a red star", "yes"])
    loss = model(unit(2), **batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert all("lora_" in n or n.startswith("mapper.") for n in trainable), trainable
    assert any(n.startswith("mapper.") for n in trainable)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    assert model.mapper.net.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_decoder_only_layout_learns_only_the_target():
    model = build_model(CloseConfig(clip="test", clip_dim=32, lm="tiny-gpt2"))
    batch = model.batch_builder(["a question"], ["an answer"])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    learned = labels != -100
    n_target = len(model.batch_builder._ids("an answer", 32))
    assert learned.sum().item() == n_target  # prefix slots and the question carry no loss
    assert batch["prefix_mask"][0, :4].all() and not batch["prefix_mask"][0, 4:].any()
    assert torch.equal(ids[learned], labels[learned])


def test_full_finetune_trains_the_language_model():
    model = build_model(CloseConfig(clip="test", clip_dim=32, lm="tiny-t5", lora=False))
    lm_trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("lm.")]
    assert len(lm_trainable) > 10 and not any("lora_" in n for n in lm_trainable)


def test_noise_adapter_statistics_and_eval_identity():
    dim, sigma = 512, 0.05
    adapter = NoiseAdapter(dim, sigma)
    clean = unit(2000, dim)
    adapter.eval()
    assert torch.equal(adapter(clean), clean)  # nothing is applied at evaluation time
    adapter.train()
    torch.manual_seed(1)
    noisy = adapter(clean)
    assert torch.allclose(noisy.norm(dim=-1), torch.ones(2000), atol=1e-5)
    cos = (noisy * clean).sum(-1).mean().item()
    assert abs(cos - expected_cosine(sigma, dim)) < 0.01
    raw = adapter.sample_noise(clean)
    assert abs(raw.std().item() - sigma) < 0.002 and abs(raw.mean().item()) < 0.002


@pytest.mark.parametrize("lm", LMS)
def test_save_then_load_gives_identical_generations(tmp_path, lm):
    torch.manual_seed(3)
    model = build_model(CloseConfig(clip="test", clip_dim=32, lm=lm))
    with torch.no_grad():  # move LoRA off its zero init so the saved adapter matters
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    model.eval()
    vecs = unit(3, seed=5)
    inputs = ["what is left?", None, "count them"]
    before_beam = model.generate(vecs, inputs, num_beams=3, max_new_tokens=6)
    before_greedy = model.generate(vecs, None, num_beams=1, max_new_tokens=6)
    folder = model.save(tmp_path / "model")
    loaded = load_model(folder)
    assert loaded.generate(vecs, inputs, num_beams=3, max_new_tokens=6) == before_beam
    assert loaded.generate(vecs, None, num_beams=1, max_new_tokens=6) == before_greedy
    assert len(before_beam) == 3 and all(len(c) == 1 for c in before_beam)
    meta = json.loads((folder / "stylecap.json").read_text())
    assert meta["config"]["lm"] == lm and meta["adapter"]["kind"] == "noise"
    assert (folder / "lora" / "adapter_model.safetensors").exists() and (folder / "lm" / "config.json").exists()


def test_generate_returns_k_scored_samples(lora_model):
    lora_model.eval()
    out = lora_model.generate(unit(2), None, do_sample=True, temperature=0.9, num_return_sequences=3,
                              max_new_tokens=5)
    assert [len(c) for c in out] == [3, 3]
    assert all(0.0 <= score <= 1.0 for caps in out for _, score in caps)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no stylecap.json"):
        load_model(tmp_path / "empty")
    model = build_model(CloseConfig(clip="test", clip_dim=32, lm="tiny-t5"))
    folder = model.save(tmp_path / "m")
    (folder / "mapper.safetensors").unlink()
    with pytest.raises(ModelError, match="incomplete.*mapper"):
        load_model(folder)
    meta = json.loads((folder / "stylecap.json").read_text())
    meta["format_version"] = 99
    (folder / "stylecap.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not readable by this stylecap"):
        load_model(folder)


def test_unknown_language_model_is_a_model_error():
    with pytest.raises(ModelError, match="could not load language model"):
        build_model(CloseConfig(clip="test", clip_dim=32, lm="no-such-model-anywhere"))
