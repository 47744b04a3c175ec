"""Gap adapters on synthetic vectors with a known shift / linear map / covariance."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from stylecap.core.gap import (
    ADAPTERS,
    CovarianceAdapter,
    LinearAdapter,
    MeanShiftAdapter,
    auto_noise,
    build_adapter,
    expected_cosine,
    fit_adapters,
    load_fitted_adapter,
    resolve_noise,
    save_gap,
)
from stylecap.errors import InputError, ModelError, UsageError
from stylecap.options import ADAPTER_KINDS, parse_noise

DIM = 16


def _text(n: int = 4000, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_registry_has_all_kinds_and_rejects_unknown():
    assert list(ADAPTERS) == ["noise", "mean-shift", "linear", "covariance", "coral", "pseudo-linear"]
    with pytest.raises(UsageError, match="unknown gap adapter"):
        build_adapter("wobble", DIM, 0.1)


def test_mean_shift_recovers_the_shift():
    text = _text()
    shift = torch.linspace(-0.3, 0.3, DIM)
    adapter = MeanShiftAdapter(DIM, 0.0)
    stats = adapter.fit(text, text + shift)
    assert torch.allclose(adapter.offset, shift, atol=1e-5)
    assert stats["offset_norm"] == pytest.approx(float(shift.norm()), rel=1e-4)


def test_linear_recovers_the_map_and_reports_held_out_fit():
    gen = torch.Generator().manual_seed(1)
    text = _text()
    true_map = torch.randn(DIM, DIM, generator=gen) / math.sqrt(DIM)
    true_bias = torch.randn(DIM, generator=gen) * 0.1
    image = text @ true_map + true_bias + 0.001 * torch.randn(len(text), DIM, generator=gen)
    adapter = LinearAdapter(DIM, 0.0)
    stats = adapter.fit(text, image)
    assert torch.allclose(adapter.weight, true_map, atol=0.02)
    assert torch.allclose(adapter.bias, true_bias, atol=0.01)
    assert stats["pairs_held_out"] == 400 and stats["held_out_cosine"] > 0.99
    assert stats["held_out_distance"] < 0.1 * stats["held_out_distance_before"]


def test_covariance_recovers_the_shape_of_the_differences_and_keeps_sigma_meaning():
    gen = torch.Generator().manual_seed(2)
    text = _text()
    mix = torch.randn(DIM, 3, generator=gen)  # differences live mostly in a 3-d subspace
    diffs = torch.randn(len(text), 3, generator=gen) @ mix.T * 0.1 + 0.01 * torch.randn(len(text), DIM, generator=gen)
    shift = torch.full((DIM,), 0.05)
    adapter = CovarianceAdapter(DIM, 0.5)
    stats = adapter.fit(text, text + shift + diffs)
    true_cov = torch.cov(diffs.T)
    expected = true_cov * DIM / true_cov.trace()
    assert torch.allclose(adapter.factor @ adapter.factor.T, expected, atol=1e-3)
    assert torch.allclose(adapter.offset, shift, atol=0.01)
    assert stats["effective_rank"] < 4
    torch.manual_seed(0)
    noise = adapter.sample_noise(torch.zeros(20000, DIM))
    assert torch.allclose(torch.cov(noise.T), 0.25 * expected, atol=0.05)
    assert float((noise ** 2).sum(1).mean()) == pytest.approx(0.25 * DIM, rel=0.03)  # same energy as isotropic


def test_noise_statistics_match_sigma_and_expected_cosine():
    sigma, dim = 0.1, 256
    adapter = build_adapter("noise", dim, sigma).train()
    torch.manual_seed(0)
    clean = F.normalize(torch.randn(4000, dim), dim=-1)
    noise = adapter.sample_noise(clean)
    assert float(noise.std()) == pytest.approx(sigma, rel=0.02)
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.002)
    noisy = adapter(clean)
    assert torch.allclose(noisy.norm(dim=1), torch.ones(len(noisy)), atol=1e-5)
    assert float((noisy * clean).sum(1).mean()) == pytest.approx(expected_cosine(sigma, dim), abs=0.01)


@pytest.mark.parametrize("kind", list(ADAPTERS))
def test_nothing_is_applied_at_evaluation_time(kind):
    text = _text(200)
    adapter, _ = fit_adapters(text, F.normalize(text + 0.3, dim=-1), [kind], noise=0.5)[kind]
    adapter.eval()
    assert torch.equal(adapter(text), text)
    adapter.train()
    assert not torch.allclose(adapter(text), text)


def test_auto_noise_matches_the_paper_example_and_parses():
    assert auto_noise({"cos_image_caption": 0.26}, 768) == pytest.approx(0.134, abs=0.002)
    with pytest.raises(ModelError):
        auto_noise({"cos_image_caption": -0.1}, 768)
    assert parse_noise("auto") == "auto" and parse_noise("0.12") == 0.12 and parse_noise(None) is None
    assert set(ADAPTERS) == set(ADAPTER_KINDS)  # the options' list names exactly the implemented adapters
    for bad in ("-1", "loud", "nan", "inf"):
        with pytest.raises(UsageError, match="--noise"):
            parse_noise(bad)
    with pytest.raises(UsageError, match="--gap"):
        resolve_noise("auto", None, DIM)


def test_gap_folder_round_trip_restores_fitted_adapters(tmp_path):
    text = _text(500)
    image = F.normalize(text @ torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(3)) + 0.2, dim=-1)
    fitted = fit_adapters(text, image)
    assert set(fitted) == {"mean-shift", "linear", "covariance"}
    save_gap(tmp_path, fitted, {"clip": "synthetic", "dim": DIM, "statistics": {"cos_image_caption": 0.3}})
    assert set(json.loads((tmp_path / "gap.json").read_text())["adapters"]) == set(fitted)
    for kind, (original, _) in fitted.items():
        loaded = load_fitted_adapter(kind, tmp_path, 0.1, DIM)
        assert type(loaded) is ADAPTERS[kind] and loaded.noise == 0.1
        for name, buffer in original.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], buffer)
        # the model-loading path: build the unfitted adapter, then load its saved state
        rebuilt = build_adapter(kind, DIM, 0.1)
        rebuilt.load_state_dict(loaded.state_dict())
        assert torch.allclose(F.normalize(rebuilt.shift(text), dim=-1), F.normalize(original.shift(text), dim=-1))
    sigma, record = resolve_noise("auto", tmp_path, DIM)
    assert sigma == pytest.approx(math.sqrt((1 / 0.09 - 1) / DIM)) and record["cos_image_caption"] == 0.3
    # with a fitted adapter, auto σ covers only the cosine its shift leaves: the linear map is exact
    # here up to the noise-free bias, so it leaves almost nothing; a mean shift cannot undo a rotation
    after = {kind: fit["cos_image_caption_after_shift"] for kind, (_, fit) in fitted.items()}
    assert after["linear"] > 0.99 and after["mean-shift"] < 0.1
    linear_sigma, record = resolve_noise("auto", tmp_path, DIM, "linear")
    assert linear_sigma == pytest.approx(math.sqrt((1 / after["linear"] ** 2 - 1) / DIM))
    assert record["cos_covered"] == pytest.approx(after["linear"]) and linear_sigma < 0.1 * sigma


def test_fitted_adapter_errors_name_the_fix(tmp_path):
    assert type(load_fitted_adapter("noise", None, 0.1, DIM)).__name__ == "NoiseAdapter"
    with pytest.raises(UsageError, match="fitted first"):
        load_fitted_adapter("linear", None, 0.1, DIM)
    with pytest.raises(InputError, match="no gap.json"):
        load_fitted_adapter("linear", tmp_path, 0.1, DIM)
    save_gap(tmp_path, fit_adapters(_text(50), _text(50, seed=1), ["mean-shift"]), {"dim": DIM, "statistics": {}})
    with pytest.raises(InputError, match="no fitted 'linear'"):
        load_fitted_adapter("linear", tmp_path, 0.1, DIM)
    with pytest.raises(ModelError, match="16-d CLIP"):
        load_fitted_adapter("mean-shift", tmp_path, 0.1, 32)
