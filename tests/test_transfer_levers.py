"""Closing the gap without pairs: the text memory (projection, retrieval), adapters fitted from
unpaired images and texts, honest references, and the world's character-based and reviews voices."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from stylecap.core.gap import (
    CoralAdapter,
    LinearAdapter,
    PseudoLinearAdapter,
    fit_unpaired,
    nearest_text_cosine,
    nearest_texts,
    shrunk_covariance,
)
from stylecap.core.memory import RetrievalRows, TextMemory, load_memory, read_through, with_retrieved
from stylecap.core.tasks import Example
from stylecap.core.train import Row
from stylecap.errors import ModelError, UsageError
from stylecap.options import ModelChoices
from stylecap.paths import asset
from stylecap.workflows.evaluate import reference_texts
from stylecap.world import is_in_voice, parse_caption, vocab
from stylecap.world.language import voice_caption
from stylecap.world.scenes import sample_scene, stream

DIM = 16


def _unit(n: int, seed: int, dim: int = DIM) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ----------------------------------------------------------------------------- the text memory

def _memory(n: int = 300, block_groups: int = 3) -> TextMemory:
    vectors = _unit(n, 0)
    return TextMemory(vectors, [f"text {i}" for i in range(n)], torch.arange(n) // block_groups)


def test_search_finds_the_exact_nearest_texts_across_blocks(monkeypatch):
    import stylecap.core.memory as memory_module

    memory, queries = _memory(), _unit(7, 1)
    expected = (queries @ memory.vectors.float().T).topk(5, dim=1)
    monkeypatch.setattr(memory_module, "BLOCK", 64)  # several blocks: the running top-k must merge them
    scores, where = memory.search(queries, 5)
    assert torch.equal(where, expected.indices)
    assert torch.allclose(scores, expected.values, atol=1e-5)


def test_search_leaves_out_the_query_items_group():
    memory = _memory()
    own = memory.vectors[:4].float()  # each query is a memory text itself: first of its group
    _, unfiltered = memory.search(own, 1)
    assert unfiltered[:, 0].tolist() == [0, 1, 2, 3]
    _, where = memory.search(own, 10, exclude=memory.groups[:4])
    assert not (memory.groups[where] == memory.groups[:4, None]).any()


def test_projection_follows_the_nearest_text_at_low_tau_and_mixes_at_high_tau():
    memory, queries = _memory(), _unit(5, 2)
    nearest = memory.vectors.float()[memory.search(queries, 1)[1][:, 0]]
    assert torch.allclose(memory.project(queries, 8, tau=1e-4), nearest, atol=1e-3)
    mixed = memory.project(queries, 8, tau=1e4)
    _, where = memory.search(queries, 8)
    assert torch.allclose(mixed, F.normalize(memory.vectors.float()[where].mean(1), dim=-1), atol=1e-3)
    assert torch.allclose(mixed.norm(dim=1), torch.ones(5), atol=1e-5)


def test_read_through_retrieves_with_the_image_vector_then_projects():
    memory, queries = _memory(), _unit(3, 3)
    settings = {"project": True, "tau": 0.01, "project_k": 4, "retrieve_k": 2}
    vectors, texts = read_through(memory, settings, queries, ["what shape?", None, None])
    near = memory.retrieve(queries, 2)
    assert texts == [with_retrieved("what shape?", near[0]), with_retrieved(None, near[1]), with_retrieved(None, near[2])]
    assert texts[0].startswith("what shape? | ")  # the task's own input first: truncation never cuts it
    assert torch.allclose(vectors, memory.project(queries, 4, 0.01))
    assert read_through(None, settings, queries, [None] * 3)[0] is queries


def test_retrieval_rows_are_reproducible_leave_their_item_out_and_keep_the_global_stream():
    from stylecap.core.gap import NoiseAdapter

    memory = _memory()
    rows = [Row(vector=i, target=f"text {i}") for i in range(len(memory))]
    augmented = RetrievalRows(rows, memory.vectors.float(), memory, memory.groups, NoiseAdapter(DIM, 0.1), k=3, seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = augmented.batch([0, 4, 8])
    assert torch.equal(torch.get_rng_state(), before)
    assert [r.input_text for r in first] == [r.input_text for r in augmented.batch([0, 4, 8])]
    for row in first:
        own_group = {f"text {i}" for i in range(len(memory)) if memory.groups[i] == memory.groups[row.vector]}
        assert own_group.isdisjoint(row.input_text.split(" | "))
        assert row.target == f"text {row.vector}" and len(row.input_text.split(" | ")) == 3


def test_memory_options_are_checked_before_anything_loads():
    assert ModelChoices(memory_projection=True).uses_memory and ModelChoices(retrieve=2).uses_memory
    assert not ModelChoices().uses_memory
    for bad in ({"projection_tau": 0}, {"projection_k": 0}, {"retrieve": -1}, {"retrieve": 1000},
                {"memory_size": 10}, {"memory_projection": True, "memory_size": 0}):
        with pytest.raises(UsageError):
            ModelChoices(**bad)


# ----------------------------------------------------------------------------- end to end on tiny models

@pytest.fixture(scope="module")
def lever_model(tmp_path_factory):
    """A tiny captioner trained a few steps with both memory levers, through the command line."""
    from conftest import make_captions, run_cli

    folder = tmp_path_factory.mktemp("levers")
    captions = folder / "captions.txt"
    captions.write_text("\n".join(make_captions(120, seed=4)) + "\n")
    code = run_cli(["train", "--data", str(captions), "--clip", str(asset("tiny-clip.json")), "--out",
                     str(folder / "run"), "--steps", "4", "--batch-size", "8", "--memory-projection",
                     "--projection-tau", "0.02", "--projection-k", "8", "--retrieve", "2", "--memory-size", "100",
                     "--quiet"])
    assert code == 0
    return folder / "run" / "model"


def test_saved_model_records_its_memory_and_loads_it_from_its_path_alone(lever_model, tmp_path):
    from stylecap.core.model import load_model

    config = json.loads((lever_model / "stylecap.json").read_text())["config"]
    memory = config["memory"]
    assert {k: memory[k] for k in ("project", "tau", "project_k", "retrieve_k", "entries")} == \
        {"project": True, "tau": 0.02, "project_k": 8, "retrieve_k": 2, "entries": 100}
    assert set(memory["embedding_cache"]) == {"clip_identity", "corpus_digest"}
    assert config["max_input_len"] == 64 + 2 * config["max_target_len"]  # room for the retrieved texts
    moved = shutil.copytree(lever_model, tmp_path / "elsewhere")
    model = load_model(moved)
    assert len(model.memory) == 100 and model.memory.identity()["corpus_digest"] == memory["corpus_digest"]
    [[(text, score)]] = model.generate(_unit(1, 9, dim=32), num_beams=1, max_new_tokens=3)
    assert isinstance(text, str) and 0 <= score <= 1


def test_caption_command_reads_through_the_saved_memory(lever_model, tmp_path, cli, monkeypatch):
    from stylecap.core import memory as memory_module

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (60 * i, 120, 200)).save(photos / f"{i}.png")
    calls = []
    real = memory_module.TextMemory.project
    monkeypatch.setattr(memory_module.TextMemory, "project", lambda self, *a: calls.append(a) or real(self, *a))
    out = tmp_path / "captions.jsonl"
    assert cli(["caption", str(photos), "--model", str(lever_model), "--out", str(out), "--beam", "1",
                "--max-length", "3", "--quiet"]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert calls and calls[0][1:] == (8, 0.02)  # the saved k and τ


@pytest.mark.fault
def test_a_model_without_its_memory_folder_is_one_line_and_exit_4(lever_model, tmp_path, cli, capsys):
    broken = shutil.copytree(lever_model, tmp_path / "broken")
    shutil.rmtree(broken / "memory")
    photo = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(photo)
    assert cli(["caption", str(photo), "--model", str(broken), "--quiet"]) == 4
    err = capsys.readouterr().err.strip()
    assert "memory" in err and len(err.splitlines()) == 1
    with pytest.raises(ModelError):
        load_memory(broken / "memory")


@pytest.mark.fault
@pytest.mark.parametrize("args, flag", [
    (["--projection-tau", "0", "--memory-projection"], "--projection-tau"),
    (["--retrieve", "-2"], "--retrieve"),
    (["--memory-size", "50"], "--memory-size"),
    (["--memory-projection", "--input", "images"], "--input images"),
])
def test_bad_memory_options_are_exit_2(args, flag, tmp_path, cli, capsys, caption_file):
    code = cli(["train", "--data", str(caption_file), "--clip", str(asset("tiny-clip.json")), "--out",
                str(tmp_path / "run"), "--steps", "1", "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and flag in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- adapters without pairs

def test_coral_matches_the_image_mean_and_covariance_without_pairs():
    gen = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(4000, DIM, generator=gen) @ (torch.randn(DIM, DIM, generator=gen) * 0.3) + 1, dim=-1)
    image = F.normalize(torch.randn(3000, DIM, generator=gen) @ (torch.randn(DIM, DIM, generator=gen) * 0.2) - 0.5,
                        dim=-1)
    adapter = CoralAdapter(DIM, 0.0)
    stats = adapter.fit(text, image)
    moved = adapter.shift(text)
    assert torch.allclose(moved.mean(0), image.mean(0), atol=1e-4)
    target = torch.cov(image.T)
    assert float((torch.cov(moved.T) - target).norm()) < 0.1 * float(target.norm())
    assert stats["texts"] == 4000 and stats["images"] == 3000


def test_shrinkage_grows_as_the_sample_shrinks():
    scales = torch.linspace(0.2, 2.0, DIM)  # far from a multiple of the identity: worth estimating
    vectors = (torch.randn(5000, DIM, generator=torch.Generator().manual_seed(4)) * scales).double()
    rho = [shrunk_covariance(vectors[:n])[1] for n in (8, 64, 5000)]
    assert rho[0] > rho[1] > rho[2] and 0 <= rho[2] < 0.05
    few, _ = shrunk_covariance(vectors[:8])
    assert float(torch.linalg.eigvalsh(few).min()) > 0  # eight 16-d vectors: still positive definite


def test_unpaired_fit_estimates_what_each_shift_leaves_and_refuses_pair_adapters():
    text = _unit(2000, 5)
    image = F.normalize(text[:300] + 0.6 + 0.05 * _unit(300, 6), dim=-1)  # shifted texts, fitted without the pairing
    fitted = fit_unpaired(text, image)
    assert set(fitted) == {"mean-shift", "coral", "pseudo-linear"}
    before = float(nearest_text_cosine(image, text).mean())
    for _, stats in fitted.values():
        assert stats["cos_image_caption_after_shift"] > before
    with pytest.raises(UsageError, match="pairs"):
        fit_unpaired(text, image, ["linear"])


def _distorted_gap(images: int, seed: int = 0):
    """Clustered texts; the images of the first ``images`` of them (and of 400 more, held out) lie
    under a shift, a non-orthogonal linear distortion and a little noise. Returns (texts, images,
    held-out texts, their images, the texts the images show)."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(60, DIM, generator=gen), dim=-1)
    text = F.normalize(centres[torch.randint(0, 60, (3000,), generator=gen)] + 0.15 * torch.randn(3000, DIM, generator=gen),
                       dim=-1)
    distortion = torch.eye(DIM) + 0.2 * torch.randn(DIM, DIM, generator=gen)
    shift = 0.5 * F.normalize(torch.randn(DIM, generator=gen), dim=0)

    def image_of(t):
        return F.normalize(t @ distortion + shift + 0.05 * torch.randn(len(t), DIM, generator=gen), dim=-1)

    held = text[2000:2400]
    return text, image_of(text[:images]), held, image_of(held), text[:images]


def _own_cosine(adapter, texts, images) -> float:
    with torch.no_grad():
        return float(F.cosine_similarity(adapter.shift(texts), images).mean())


def test_pseudo_linear_reaches_the_paired_map_without_pairs():
    text, image, held_text, held_image, shown = _distorted_gap(400)
    coral, pseudo, paired = CoralAdapter(DIM, 0.0), PseudoLinearAdapter(DIM, 0.0), LinearAdapter(DIM, 0.0)
    coral.fit(text, image)
    stats = pseudo.fit(text, image)  # never told which text each image shows
    paired.fit(shown, image)
    scores = [_own_cosine(adapter, held_text, held_image) for adapter in (coral, pseudo, paired)]
    assert scores[1] > scores[0] + 0.05 and scores[1] > scores[2] - 0.02, scores  # measured 0.875, 0.982, 0.988
    assert stats["rounds"] == PseudoLinearAdapter.ROUNDS and stats["texts_paired"] > 100


def test_unpaired_estimate_is_held_out_so_a_map_fitted_to_few_images_is_not_flattered():
    text, image, held_text, held_image, _ = _distorted_gap(24)
    adapter, stats = fit_unpaired(text, image, ["pseudo-linear"])["pseudo-linear"]
    in_sample = float(nearest_texts(image, text, transform=adapter.shift)[0].mean())
    assert stats["cos_image_caption_after_shift"] < in_sample - 0.01
    assert "other half" in stats["cos_after_shift_estimated_by"]
    tiny = fit_unpaired(text, image[:3], ["mean-shift"])["mean-shift"][1]  # too few images to halve
    assert tiny["cos_after_shift_estimated_by"] == "nearest text"


def test_nearest_texts_searches_in_blocks_and_maps_each_block():
    images, texts = _unit(7, 11), _unit(1000, 12)
    cos, where = nearest_texts(images, texts, k=5, block=64)
    full = (images @ texts.T).topk(5, dim=1)
    assert torch.equal(where, full.indices) and torch.allclose(cos, full.values, atol=1e-6)
    _, flipped = nearest_texts(images, texts, k=1, transform=lambda block: -block, block=100)
    assert torch.equal(flipped[:, 0], (images @ texts.T).argmin(1))


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3))).save(folder / f"{i:03d}.png")
    return folder


def test_gap_fit_from_unpaired_images_and_texts_feeds_training(tmp_path, cli, caption_file):
    photos = _photos(tmp_path / "photos", 12)
    clip = str(asset("tiny-clip.json"))
    assert cli(["gap", "fit", "--images", str(photos), "--texts", str(caption_file), "--clip", clip,
                "--out", str(tmp_path / "gap"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "gap" / "gap.json").read_text())
    assert meta["pairs"] is None and meta["unpaired"]["images"]["images"] == 12
    assert meta["statistics"]["cos_image_caption_estimated_by"] == "nearest text"
    assert set(meta["adapters"]) == {"mean-shift", "coral", "pseudo-linear"}
    assert cli(["train", "--data", str(caption_file), "--clip", clip, "--out", str(tmp_path / "run"), "--steps", "2",
                "--batch-size", "4", "--adapter", "coral", "--gap", str(tmp_path / "gap"), "--noise", "auto",
                "--quiet"]) == 0
    saved = json.loads((tmp_path / "run" / "model" / "stylecap.json").read_text())["config"]
    assert saved["adapter"] == "coral" and saved["extra"]["noise_auto"]["adapter"] == "coral"


@pytest.mark.fault
@pytest.mark.parametrize("case, code, message", [
    ("texts without images", 2, "--images"),
    ("pairs and texts", 2, "--pairs"),
    ("pair adapter", 2, "pairs"),
    ("no images", 3, "2 of each"),
])
def test_unpaired_gap_fit_errors_are_one_line(case, code, message, tmp_path, cli, capsys, caption_file):
    clip = str(asset("tiny-clip.json"))
    args = {"texts without images": ["--texts", str(caption_file)],
            "pairs and texts": ["--texts", str(caption_file), "--pairs", str(caption_file)],
            "pair adapter": ["--texts", str(caption_file), "--images", str(_photos(tmp_path / "p", 3)),
                             "--adapters", "linear"],
            "no images": ["--texts", str(caption_file), "--images", str(_photos(tmp_path / "empty", 0))]}[case]
    assert cli(["gap", "fit", "--clip", clip, "--out", str(tmp_path / "gap"), "--quiet", *args]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- honest references

def test_both_inputs_score_against_the_same_references_without_the_input_caption():
    example = Example(target="a red circle", clip_text="a red circle", image="1.png", id="1",
                      refs=["a red circle", "a crimson disc", "a red round shape"])
    assert reference_texts(example, "text", "caption") == reference_texts(example, "images", "caption") == \
        ["a crimson disc", "a red round shape"]
    alone = Example(target="x", clip_text="x", refs=["x"])
    assert reference_texts(alone, "images", "caption") == ["x"]  # nothing else to score against
    answer = Example(target="2", clip_text="two shapes", refs=["2"])
    assert reference_texts(answer, "images", "vqa") == ["2"]


# ----------------------------------------------------------------------------- the two new voices

def _scenes(n: int = 60):
    return [sample_scene(stream(0, i, "scene"), i, "train") for i in range(1, n + 1)]


@pytest.mark.parametrize("voice", ["character-based", "reviews"])
def test_new_voices_name_every_object_and_pass_only_their_own_check(voice):
    voices = list(vocab()["voices"])
    for scene in _scenes():
        text = voice_caption(scene, voice, random.Random(scene.image_id)).text
        assert sorted(parse_caption(text).objects) == sorted(o.key for o in scene.objects), text
        assert [is_in_voice(text, v) for v in voices] == [v == voice for v in voices], text


def test_a_review_rates_what_the_picture_holds():
    for scene in _scenes(30):
        text = voice_caption(scene, "reviews", random.Random(scene.image_id)).text
        assert f"{2 + len(scene.objects)}/5" in text or f"{2 + len(scene.objects)} out of 5" in text


@pytest.mark.parametrize("text, voice, expected", [
    ("Mira spots a red circle and grins.", "character-based", True),
    ("A red circle. Mira.", "character-based", False),  # named, but does nothing in the scene
    ("Someone spots a red circle.", "character-based", False),  # acts, but is nobody
    ("Rated 4/5: a red circle, nicely framed.", "reviews", True),
    ("A red circle, nicely framed.", "reviews", False),  # an opinion without a rating
    ("Rated 14/50: a red circle.", "reviews", False),
    ("A red circle, 3 out of 5.", "reviews", False),  # a rating without an opinion
])
def test_voice_checks_parse_rather_than_spot_a_word(text, voice, expected):
    assert is_in_voice(text, voice) is expected


# ----------------------------------------------------------------------------- bench quality's regimes

def _means(**values) -> dict:
    return {metric: {"mean": value, "std": 0.0, "runs": [value]} for metric, value in values.items()}


def test_lever_checks_name_each_regime_and_expand_over_every_voice():
    from stylecap.experiments.demo import target_checks

    results = {"caption": {"image-trained": _means(cider=1.0, object_f1=0.8),
                           "projection": _means(cider=1.1, object_f1=0.7), "retrieval": _means(cider=0.9, object_f1=0.82),
                           "unpaired-pseudo-linear-1000": _means(cider=1.02, object_f1=0.81),
                           "unpaired-mean-shift-1000": _means(cider=0.97, object_f1=0.79),
                           "pairs-linear-1000": _means(cider=1.04, object_f1=0.8)},
               "style": {"egocentric+projection": _means(in_voice=1.0, object_f1=0.7),
                         "reviews+projection": _means(in_voice=0.5, object_f1=0.5)}}
    checks = {c["target"]: (c["value"], c["pass"]) for c in target_checks(results, ["egocentric", "reviews"])}
    assert checks["no images: best lever CIDEr-D ≥ 1.0× image-trained"] == (1.1, True)
    assert checks["no images: best lever object F1 ≥ 1.0× image-trained"] == (1.025, True)  # the best of the two
    assert checks["unpaired images (1,000): best adapter CIDEr-D ≥ 1.0× image-trained"] == (1.02, True)
    assert checks["pairs (1,000): linear CIDEr-D ≥ 1.05× image-trained"] == (1.04, False)
    assert checks["style with the no-image lever: ≥ 90% of captions in the egocentric voice"] == (1.0, True)
    assert checks["style with the no-image lever: ≥ 90% of captions in the reviews voice"] == (0.5, False)
    assert checks["style with the no-image lever: reviews object F1 ≥ 0.9× the neutral model with it"] == \
        (round(0.5 / 0.7, 4), False)


def test_images_curve_reads_both_sources_against_the_reference(tmp_path):
    from stylecap.experiments.demo import curve_variants, images_curve, plot_curve, style_lever

    caption = {"image-trained": _means(cider=1.0, object_f1=0.5)}
    caption.update({name: _means(cider=0.5 + v.images / 4000, object_f1=0.4) for name, v in curve_variants().items()})
    curve = images_curve(caption)
    assert [p["images"] for p in curve["unpaired"]] == [p["images"] for p in curve["pairs"]] == curve["images"]
    assert curve["pairs"][-1]["cider_ratio"] == 1.0 and curve["unpaired"][0]["object_f1_ratio"] == 0.8
    assert plot_curve(curve, tmp_path / "curve.png").stat().st_size > 0
    lever = style_lever("reviews")
    assert lever.name == "reviews+projection" and lever.projection and lever.regime == "no images"


@pytest.mark.slow
def test_reduced_bench_trains_the_regimes_news_and_a_voice_with_its_lever(tmp_path, capsys, cli, monkeypatch):
    """`bench quality` end to end at toy size, on a plan cut down to one variant per new path: a
    memory lever, an adapter fitted without pairs, visual news, a new voice with and without its lever."""
    from stylecap.experiments import demo
    from stylecap.world import build_world

    def only(group: dict, *names: str) -> dict:
        return {name: group[name] for name in names}

    monkeypatch.setattr(demo, "CAPTION_VARIANTS", only(demo.CAPTION_VARIANTS, "image-trained"))
    monkeypatch.setattr(demo, "SWEEP_VARIANTS", {})
    monkeypatch.setattr(demo, "LEVER_VARIANTS", only(demo.LEVER_VARIANTS, "projection", "unpaired-pseudo-linear-1000"))
    monkeypatch.setattr(demo, "ANSWER_VARIANTS", {})
    monkeypatch.setattr(demo, "ANSWER_LEVERS", only(demo.ANSWER_LEVERS, "projection"))
    monkeypatch.setitem(demo.PLAN["quality"], "curve", False)
    world = tmp_path / "world"
    build_world(world, seed=2, size="small", splits={"clip": 0, "train": 30, "pairs": 12, "val": 0, "test": 6})
    out = tmp_path / "bench"
    assert cli(["bench", "quality", "--out", str(out), "--world", str(world), "--steps", "2", "--seeds", "0",
                "--test-limit", "4", "--tasks", "caption,news,style", "--voice", "reviews"]) == 0
    report = json.loads((out / "report.json").read_text())
    trained = {"image-trained", "projection", "unpaired-pseudo-linear-1000"}
    assert set(report["results"]["caption"]) == trained | {f"{name}+rerank" for name in trained}  # the same models, reranked
    assert report["regimes"] == {"projection": "no images", "unpaired-pseudo-linear-1000": "unpaired images",
                                 "projection+rerank": "no images", "unpaired-pseudo-linear-1000+rerank": "unpaired images",
                                 "image-trained+rerank": "reference"}
    assert len(list((out / "runs").glob("caption-*"))) == 3  # reranking trained nothing
    assert any(c["target"].startswith("unpaired images (1,000), both reranked") for c in report["checks"])
    printed = capsys.readouterr().out
    assert "image-trained+rerank" in printed and max(map(len, printed.splitlines())) <= 80
    assert set(report["results"]["style"]) == {"reviews", "reviews+projection"}
    assert {"in_voice", "object_f1"} <= set(report["results"]["style"]["reviews+projection"])
    assert set(report["results"]["news"]["projection"]) == {"cider", "bleu4"}
    unpaired = json.loads((out / "gap-unpaired-1000" / "gap.json").read_text())
    assert unpaired["pairs"] is None and unpaired["unpaired"]["images"]["images"] == 12  # the whole pairs split
    assert len(list((out / "runs").glob("caption-projection-*/model/memory/texts.jsonl"))) == 1
    assert any(c["target"] == "style with the no-image lever: ≥ 90% of captions in the reviews voice"
               for c in report["checks"])
