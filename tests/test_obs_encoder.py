"""Tests for policy/obs_encoder.py: image trunks, crops, camera sharing and low-dim concatenation."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from policy.obs_encoder import ObsEncoder, crop_images

ROOT = Path(__file__).resolve().parents[1]

LOW_DIM = {"agent_pos": {"shape": [2], "type": "low_dim"}, "state": {"shape": [3], "type": "low_dim"}}


def _cams(*names, hw=(20, 20)):
    return {n: {"shape": [*hw, 3], "type": "rgb"} for n in names}


def test_low_dim_only_concatenates_normalized_inputs():
    enc = ObsEncoder(LOW_DIM)
    obs = {"agent_pos": torch.randn(4, 2, 2), "state": torch.randn(4, 2, 3)}
    out = enc(obs)
    assert enc.output_dim == 5
    torch.testing.assert_close(out, torch.cat([obs["agent_pos"], obs["state"]], dim=-1))


@pytest.mark.parametrize("backbone, hw, crop", [("small", (20, 20), (16, 16)), ("resnet18", (36, 36), (32, 32))])
def test_image_and_low_dim_features_shape(backbone, hw, crop):
    torch.manual_seed(0)
    meta = {**_cams("image", hw=hw), "agent_pos": {"shape": [2], "type": "low_dim"}}
    enc = ObsEncoder(meta, backbone=backbone, crop_shape=crop, feature_dim=8, num_keypoints=4)
    obs = {"image": torch.rand(3, 2, *hw, 3), "agent_pos": torch.randn(3, 2, 2)}
    out = enc(obs)
    assert out.shape == (3, 2, 8 + 2) and enc.output_dim == 10
    torch.testing.assert_close(out[..., 8:], obs["agent_pos"])
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())
    if backbone == "resnet18":
        norms = [m for m in enc.modules() if isinstance(m, nn.GroupNorm)]
        assert norms and all(m.num_groups == m.num_channels // 16 for m in norms)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_small_trunk_channels_are_configurable():
    enc = ObsEncoder(
        _cams("image"),
        backbone="small",
        crop_shape=(16, 16),
        feature_dim=4,
        num_keypoints=4,
        small_channels=(8, 12, 16),
    )
    trunk = enc.image_encoders["image"].trunk
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 12), (12, 16)]
    assert [m.num_groups for m in trunk.modules() if isinstance(m, nn.GroupNorm)] == [1, 1, 1]
    assert enc({"image": torch.rand(2, 2, 20, 20, 3)}).shape == (2, 2, 4)


@pytest.mark.parametrize("strides, side", [(None, 2), ((2, 2, 1), 4), ((1, 2, 1), 7), ((1, 1, 1), 13)])
def test_small_trunk_strides_set_the_keypoint_map_resolution(strides, side):
    enc = ObsEncoder(_cams("image"), backbone="small", crop_shape=(13, 13), num_keypoints=4, small_strides=strides)
    image = enc.image_encoders["image"]
    feature = image.trunk(torch.rand(3, 3, 13, 13))
    assert tuple(feature.shape[-2:]) == (side, side) == tuple(image.trunk.output_shape([3, 13, 13])[-2:])
    assert (image.keypoints._in_h, image.keypoints._in_w) == (side, side)
    assert enc({"image": torch.rand(2, 2, 16, 16, 3)}).shape == (2, 2, 64)


def test_small_trunk_strides_reject_bad_values():
    for strides in ((2, 2), (2, 3, 2)):
        with pytest.raises(ValueError, match="small_strides .* must give stride 1 or 2 to each of the 3"):
            ObsEncoder(_cams("image"), backbone="small", crop_shape=(16, 16), small_strides=strides)


def test_small_trunk_activation_is_mish_or_silu():
    kinds = {}
    for activation in ("mish", "silu"):
        torch.manual_seed(0)
        enc = ObsEncoder(_cams("image"), backbone="small", crop_shape=(16, 16), small_activation=activation)
        kinds[activation] = [type(m).__name__ for m in enc.image_encoders["image"].trunk.nets]
        assert enc({"image": torch.rand(2, 2, 20, 20, 3)}).shape == (2, 2, 64)
    assert kinds["silu"].count("SiLU") == 3 and kinds["mish"].count("SiLU") == 0 and kinds["mish"].count("Mish") == 3
    with pytest.raises(ValueError, match="unknown small_activation 'gelu'; use one of"):
        ObsEncoder(_cams("image"), backbone="small", crop_shape=(16, 16), small_activation="gelu")


def test_random_crop_is_a_window_of_each_image_and_eval_crop_is_centred():
    torch.manual_seed(0)
    images = torch.arange(5 * 9 * 11 * 3, dtype=torch.float32).reshape(5, 9, 11, 3)
    crops = crop_images(images, (4, 6), random=True)
    assert crops.shape == (5, 4, 6, 3)
    offsets = []
    for img, crop in zip(images, crops):
        top = int(torch.nonzero(img[:, :, 0] == crop[0, 0, 0])[0, 0])
        left = int(torch.nonzero(img[:, :, 0] == crop[0, 0, 0])[0, 1])
        torch.testing.assert_close(crop, img[top : top + 4, left : left + 6])
        offsets.append((top, left))
    assert len(set(offsets)) > 1
    torch.testing.assert_close(crop_images(images, (4, 6), random=False), images[:, 2:6, 2:8])


def test_training_mode_crops_randomly_eval_mode_deterministically():
    torch.manual_seed(0)
    enc = ObsEncoder(_cams("image"), backbone="small", crop_shape=(12, 12), feature_dim=4, num_keypoints=4)
    obs = {"image": torch.rand(2, 2, 20, 20, 3)}
    assert not torch.allclose(enc(obs), enc(obs))
    enc.eval()
    torch.testing.assert_close(enc(obs), enc(obs))


def test_shared_rgb_model_uses_one_trunk_and_separate_features_per_camera():
    torch.manual_seed(0)
    kw = dict(backbone="small", crop_shape=(16, 16), feature_dim=4, num_keypoints=4)
    shared = ObsEncoder(_cams("left_image", "right_image"), share_rgb_model=True, **kw).eval()
    separate = ObsEncoder(_cams("left_image", "right_image"), share_rgb_model=False, **kw)
    assert len(shared.image_encoders) == 1 and len(separate.image_encoders) == 2
    n_shared = sum(p.numel() for p in shared.parameters())
    assert 2 * n_shared == sum(p.numel() for p in separate.parameters())
    left, right = torch.rand(1, 2, 20, 20, 3), torch.rand(1, 2, 20, 20, 3)
    out = shared({"left_image": left, "right_image": right})
    assert out.shape == (1, 2, 8)
    swapped = shared({"left_image": right, "right_image": left})
    torch.testing.assert_close(out[..., :4], swapped[..., 4:])


def test_bad_shape_meta_raises_value_error():
    with pytest.raises(ValueError, match="larger than image key"):
        ObsEncoder(_cams("image", hw=(10, 10)), backbone="small", crop_shape=(12, 12))
    with pytest.raises(ValueError, match="type"):
        ObsEncoder({"x": {"shape": [2], "type": "depth"}})
    with pytest.raises(ValueError, match="rgb shape"):
        ObsEncoder({"image": {"shape": [3, 20, 20], "type": "rgb"}}, backbone="small", crop_shape=None)
    with pytest.raises(ValueError, match="backbone"):
        ObsEncoder(_cams("image"), backbone="vit", crop_shape=None)


def test_import_prints_no_robomimic_banner():
    done = subprocess.run(
        [sys.executable, "-c", "import policy.obs_encoder"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout == "" and "macro" not in done.stderr, done.stderr[-1500:]
