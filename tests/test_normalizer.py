"""Tests for data/normalizer.py: modes, inverse, constant-dimension guard, state_dict round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.normalizer import Normalizer


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(500, 3)).astype(np.float32)
    x[:, 2] = 7.0  # constant dimension
    return {"x": x, "image": rng.integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)}


def test_limits_maps_to_unit_box_and_inverts(data: dict[str, np.ndarray]) -> None:
    norm = Normalizer.fit(data, {"x": "limits"})
    x = torch.from_numpy(data["x"])
    y = norm.normalize_key("x", x)
    assert torch.allclose(y[:, :2].min(0).values, torch.tensor([-1.0, -1.0]), atol=1e-6)
    assert torch.allclose(y[:, :2].max(0).values, torch.tensor([1.0, 1.0]), atol=1e-6)
    assert torch.all(y[:, 2] == 0.0)  # constant dim is centred, not divided by zero
    assert torch.isfinite(y).all()
    assert torch.allclose(norm.unnormalize_key("x", y), x, atol=1e-5)


def test_gaussian_mode(data: dict[str, np.ndarray]) -> None:
    norm = Normalizer.fit(data, {"x": "gaussian"})
    y = norm.normalize_key("x", torch.from_numpy(data["x"]))
    assert torch.allclose(y[:, :2].mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-4)
    assert torch.all(y[:, 2] == 0.0)
    assert torch.allclose(norm.unnormalize_key("x", y), torch.from_numpy(data["x"]), atol=1e-5)


def test_image_mode_uint8_to_unit_float(data: dict[str, np.ndarray]) -> None:
    norm = Normalizer.fit(data, {"image": "image"})
    img = torch.from_numpy(data["image"])
    y = norm.normalize({"image": img, "other": img})["image"]
    assert y.dtype == torch.float32
    assert torch.allclose(y, img.float() / 255.0)
    chw = img.permute(0, 3, 1, 2)  # scalar scale: any layout works
    assert torch.allclose(norm.normalize_key("image", chw), chw.float() / 255.0)
    assert torch.allclose(norm.unnormalize_key("image", y), img.float(), atol=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        Normalizer.fit({"image": data["image"].astype(np.float32)}, {"image": "image"})


def test_passthrough_and_unknown_key(data: dict[str, np.ndarray]) -> None:
    norm = Normalizer.fit(data, {"x": "identity"})
    batch = {"x": torch.ones(2, 3), "y": torch.zeros(1)}
    out = norm.normalize(batch)
    assert out["y"] is batch["y"] and torch.equal(out["x"], batch["x"])
    with pytest.raises(KeyError, match="no statistics for key 'z'"):
        norm.normalize_key("z", torch.ones(1))


def test_state_dict_round_trip_into_fresh_normalizer(data: dict[str, np.ndarray]) -> None:
    norm = Normalizer.fit(data, {"x": "limits", "image": "image"})
    holder = torch.nn.Module()
    holder.normalizer = Normalizer()
    holder.load_state_dict({f"normalizer.{k}": v for k, v in norm.state_dict().items()})
    assert sorted(holder.normalizer.keys()) == ["image", "x"]
    x = torch.from_numpy(data["x"])
    assert torch.equal(holder.normalizer.normalize_key("x", x), norm.normalize_key("x", x))
    assert torch.equal(holder.normalizer.stats("x")["input_max"], norm.stats("x")["input_max"])


def test_bad_fit_input(data: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="mode 'minmax'"):
        Normalizer.fit(data, {"x": "minmax"})
    with pytest.raises(KeyError, match="no data for key 'y'"):
        Normalizer.fit(data, {"y": "limits"})
    bad = data["x"].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Normalizer.fit({"x": bad}, {"x": "limits"})
    with pytest.raises(ValueError, match="no samples"):
        Normalizer.fit({"x": np.zeros((0, 2))}, {"x": "limits"})


def test_moves_with_module_device_and_dtype(data: dict[str, np.ndarray]) -> None:
    norm = Normalizer.fit(data, {"x": "limits"}).to(torch.float64)
    y = norm.normalize_key("x", torch.from_numpy(data["x"]).double())
    assert y.dtype == torch.float64
