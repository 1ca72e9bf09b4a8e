"""Observation encoder: camera images and low-dim vectors -> one feature vector per observation step.

Image keys go through Diffusion Policy's vision stack built from robomimic blocks: a ResNet-18
trunk (``robomimic.models.base_nets.ResNet18Conv``, no pretrained weights) whose BatchNorms are
replaced by GroupNorm (num_groups = channels // 16), robomimic's ``SpatialSoftmax`` keypoints and
a linear projection. ``backbone="small"`` swaps the trunk for three stride-2 conv layers (same
GroupNorm, same keypoint head) so image policies train on a CPU; its strides (``small_strides``) set the resolution
of the keypoint map (2, 2, 2: a 76 px crop -> 10x10; 2, 2, 1: 19x19). Low-dim keys (already
normalized by the policy's normalizer) are concatenated after the image features.

The crop is our own rather than robomimic's ``CropRandomizer``: it cuts the (N, H, W, 3) images
the normalizer hands over with one slice per image before the permute to channels-first (robomimic's needs
CHW input and adds a crop dimension for its multi-crop averaging, which is not used here). Random
crop offsets are drawn per image in training mode; in eval mode the crop is centred. With a ``BatchShard``
(a global batch split over processes, policy.distributed) the offsets are drawn for the whole global batch and
cut to this process's rows, so every image gets the crop it gets in a one-process run; so is the keypoint
noise robomimic's SpatialSoftmax draws in training (``randn_like`` times ``noise_std``, drawn even at 0).

robomimic reads optional user settings from a ``robomimic.macros_private`` module and prints a 5-line
"No private macro file found!" banner on import when there is none; an empty one (robomimic's defaults)
is registered before the import, so every run is spared the banner.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from policy.distributed import BatchShard
from policy.mish import Mish

sys.modules.setdefault("robomimic.macros_private", types.ModuleType("robomimic.macros_private"))
from robomimic.models.base_nets import ResNet18Conv, SpatialSoftmax  # noqa: E402 - after the empty macros

OBS_TYPES = ("rgb", "low_dim")
BACKBONES = ("resnet18", "small")
# Activations of the small trunk: Mish as in Diffusion Policy's UNet, or SiLU, whose fused CPU kernels make
# the trunk's large early feature maps cheaper to train through (forward and backward).
SMALL_ACTIVATIONS = {"mish": Mish, "silu": nn.SiLU}


def replace_batchnorm_with_groupnorm(module: nn.Module, channels_per_group: int = 16) -> nn.Module:
    """Swap every BatchNorm2d for GroupNorm(channels // channels_per_group), in place; returns module."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            groups = max(1, child.num_features // channels_per_group)
            setattr(module, name, nn.GroupNorm(groups, child.num_features))
        else:
            replace_batchnorm_with_groupnorm(child, channels_per_group)
    return module


class SmallConvTrunk(nn.Module):
    """3x3 conv layers (stride 2 by default) with GroupNorm and an activation (Mish or SiLU): a CPU-sized trunk."""

    def __init__(
        self, channels: Sequence[int] = (32, 64, 128), activation: str = "mish", strides: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if activation not in SMALL_ACTIVATIONS:
            raise ValueError(f"unknown small_activation {activation!r}; use one of {sorted(SMALL_ACTIVATIONS)}")
        strides = [2] * len(channels) if strides is None else [int(s) for s in strides]
        if len(strides) != len(channels) or any(s not in (1, 2) for s in strides):
            raise ValueError(
                f"small_strides {strides} must give stride 1 or 2 to each of the {len(channels)} small_channels; fix it"
            )
        layers: list[nn.Module] = []
        cin = 3
        for cout, stride in zip(channels, strides):
            act = SMALL_ACTIVATIONS[activation]()
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(max(1, cout // 16), cout), act]
            cin = cout
        self.nets = nn.Sequential(*layers)
        self.strides = strides
        self.out_channels = cin

    def output_shape(self, input_shape: Sequence[int]) -> list[int]:
        """(C, H, W) of the feature map for an input of shape (3, H, W)."""
        _, h, w = input_shape
        for stride in self.strides:
            h, w = (h + stride - 1) // stride, (w + stride - 1) // stride
        return [self.out_channels, h, w]

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, C, H', W')."""
        return self.nets(x)


class SpatialKeypoints(SpatialSoftmax):
    """robomimic's SpatialSoftmax whose training-time keypoint noise can be drawn for a global batch (BatchShard)."""

    def forward(self, feature: Tensor, shard: BatchShard | None = None, blocks: int = 1) -> Tensor:
        """(N, C, H, W) -> (N, K, 2) keypoints; ``blocks`` equal groups of the shard's rows when cameras share it."""
        if shard is None or not self.training:
            return super().forward(feature)
        self.train(False)
        try:
            keypoints = super().forward(feature)  # (N, K, 2), the noise left out
        finally:
            self.train(True)

        def draw(count: int) -> Tensor:  # what randn_like draws for the global batch's keypoints
            return torch.randn((count, *keypoints.shape[1:]), dtype=keypoints.dtype, device=keypoints.device)

        return keypoints + shard.take(draw, len(keypoints), blocks) * self.noise_std


class ImageEncoder(nn.Module):
    """Trunk -> SpatialSoftmax keypoints -> Linear: (N, 3, H, W) float images -> (N, feature_dim)."""

    def __init__(
        self,
        image_hw: tuple[int, int],
        backbone: str,
        feature_dim: int,
        num_keypoints: int,
        small_channels: Sequence[int] = (32, 64, 128),
        small_activation: str = "mish",
        small_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if backbone == "resnet18":
            with warnings.catch_warnings():  # robomimic passes torchvision's deprecated `pretrained=False`
                warnings.simplefilter("ignore", UserWarning)
                trunk = ResNet18Conv(input_channel=3, pretrained=False)
            self.trunk = replace_batchnorm_with_groupnorm(trunk)
        elif backbone == "small":
            self.trunk = SmallConvTrunk(small_channels, small_activation, small_strides)
        else:
            raise ValueError(f"unknown image backbone {backbone!r}; use one of {BACKBONES}")
        feature_shape = self.trunk.output_shape([3, *image_hw])
        self.keypoints = SpatialKeypoints(feature_shape, num_kp=num_keypoints)
        self.project = nn.Linear(num_keypoints * 2, feature_dim)

    def forward(self, images: Tensor, shard: BatchShard | None = None, blocks: int = 1) -> Tensor:
        """(N, 3, H, W) -> (N, feature_dim); ``shard``/``blocks`` as in ``SpatialKeypoints``."""
        return self.project(self.keypoints(self.trunk(images), shard, blocks).flatten(1))


def _offsets(high: int, n: int, device: torch.device, shard: BatchShard | None) -> list[int]:
    """``n`` random crop offsets in [0, high); with a shard, drawn for its whole global batch and cut to its rows."""

    def draw(count: int) -> Tensor:
        return torch.randint(0, high, (count, 1, 1), device=device).view(-1)

    return (draw(n) if shard is None else shard.take(draw, n)).tolist()


def crop_images(images: Tensor, crop_hw: tuple[int, int], random: bool, shard: BatchShard | None = None) -> Tensor:
    """Crop (N, H, W, C) images to (N, h, w, C): per-image random offsets, or the centre."""
    n, height, width, _ = images.shape
    ch, cw = crop_hw
    if (ch, cw) == (height, width):
        return images
    if not random:
        top, left = (height - ch) // 2, (width - cw) // 2
        return images[:, top : top + ch, left : left + cw]
    top = _offsets(height - ch + 1, n, images.device, shard)
    left = _offsets(width - cw + 1, n, images.device, shard)
    # One slice per image copies whole rows; an advanced-index gather computes an index per pixel (10x slower).
    return torch.stack([images[i, t : t + ch, s : s + cw] for i, (t, s) in enumerate(zip(top, left))])  # (N, h, w, C)


class ObsEncoder(nn.Module):
    """Encode normalized observations {key: (B, To, ...)} into features (B, To, output_dim).

    ``shape_meta`` maps each observation key to ``{"shape": [...], "type": "rgb" | "low_dim"}``;
    rgb shapes are (H, W, 3) as stored, low-dim shapes are (D,).
    """

    def __init__(
        self,
        shape_meta: Mapping[str, Mapping],
        backbone: str = "resnet18",
        crop_shape: Sequence[int] | None = (76, 76),
        share_rgb_model: bool = False,
        feature_dim: int = 64,
        num_keypoints: int = 32,
        small_channels: Sequence[int] = (32, 64, 128),
        small_activation: str = "mish",
        small_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.rgb_keys: list[str] = []
        self.low_dim_keys: list[str] = []
        image_shapes: dict[str, tuple[int, int]] = {}
        low_dim = 0
        for key, meta in shape_meta.items():
            kind, shape = meta.get("type"), tuple(meta.get("shape", ()))
            if kind == "rgb":
                if len(shape) != 3 or shape[2] != 3:
                    raise ValueError(f"obs key {key!r}: rgb shape must be (H, W, 3), got {shape}; fix shape_meta")
                self.rgb_keys.append(key)
                image_shapes[key] = shape[:2]
            elif kind == "low_dim":
                if len(shape) != 1:
                    raise ValueError(f"obs key {key!r}: low_dim shape must be (D,), got {shape}; fix shape_meta")
                self.low_dim_keys.append(key)
                low_dim += shape[0]
            else:
                raise ValueError(f"obs key {key!r}: type {kind!r} is unknown; use one of {OBS_TYPES}")
        if not self.rgb_keys and not self.low_dim_keys:
            raise ValueError("ObsEncoder needs at least one observation key in shape_meta")

        self.crop_hw: dict[str, tuple[int, int]] = {}
        for key, hw in image_shapes.items():
            crop = hw if crop_shape is None else (int(crop_shape[0]), int(crop_shape[1]))
            if crop[0] > hw[0] or crop[1] > hw[1]:
                raise ValueError(
                    f"crop_shape {crop} is larger than image key {key!r} {hw}; set encoder.crop_shape smaller or null"
                )
            self.crop_hw[key] = crop
        self.share_rgb_model = share_rgb_model
        if share_rgb_model and len(set(self.crop_hw.values())) > 1:
            raise ValueError(f"share_rgb_model needs one crop size for all cameras, got {self.crop_hw}")
        self.image_encoders = nn.ModuleDict()
        for key in self.rgb_keys[:1] if share_rgb_model else self.rgb_keys:
            self.image_encoders[key] = ImageEncoder(
                self.crop_hw[key],
                backbone,
                feature_dim,
                num_keypoints,
                tuple(small_channels),
                small_activation,
                None if small_strides is None else tuple(small_strides),
            )
        self.output_dim = feature_dim * len(self.rgb_keys) + low_dim

    def forward(self, obs: Mapping[str, Tensor], shard: BatchShard | None = None) -> Tensor:
        """Normalized obs {rgb: (B, To, H, W, 3) float, low_dim: (B, To, D)} -> (B, To, output_dim).

        ``shard``: the batch is this process's rows of a global batch; random crops are drawn for all of it.
        """
        first = obs[(self.rgb_keys or self.low_dim_keys)[0]]
        batch, steps = first.shape[:2]
        features: list[Tensor] = []
        if self.rgb_keys:
            crops = [
                crop_images(obs[key].flatten(0, 1), self.crop_hw[key], self.training, shard).permute(0, 3, 1, 2)
                for key in self.rgb_keys
            ]  # each (B * To, 3, h, w), channels-last in memory
            if self.share_rgb_model:
                shared = self.image_encoders[self.rgb_keys[0]]
                encoded = shared(torch.cat(crops), shard, len(crops)).chunk(len(crops))
            else:
                encoded = [self.image_encoders[key](img, shard) for key, img in zip(self.rgb_keys, crops)]
            features += [f.view(batch, steps, -1) for f in encoded]
        features += [obs[key] for key in self.low_dim_keys]
        return torch.cat(features, dim=-1) if len(features) > 1 else features[0]
