"""Tests for policy/checkpoint.py and ChunkPolicy.from_checkpoint."""

import os
import random
import stat
import struct
import zipfile
from pathlib import PurePosixPath

import pytest
import torch

from data.normalizer import Normalizer
from policy.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_config,
    config_to_yaml,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from policy.chunk_policy import ChunkPolicy
from policy.objectives import DDPM
from policy.samplers import EulerSampler

META = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
BUILD = {
    "policy": {
        "horizon": 8,
        "n_obs_steps": 2,
        "n_action_steps": 4,
        "encoder": {"_target_": "policy.obs_encoder.ObsEncoder", "backbone": "small"},
        "denoiser": {
            "_target_": "policy.unet.ConditionalUnet1D",
            "down_dims": [16, 32],
            "diffusion_step_embed_dim": 16,
        },
    },
    "objective": {"_target_": "policy.objectives.FlowMatching"},
    "sampler": {"_target_": "policy.samplers.EulerSampler", "num_steps": 3},
    "shape_meta": META,
}


def _state(seed: int = 0, build: dict = BUILD) -> dict:
    torch.manual_seed(seed)
    policy = ChunkPolicy.from_config(build["policy"], build["objective"], build["sampler"], META)
    g = torch.Generator().manual_seed(seed)
    policy.set_normalizer(
        Normalizer.fit(
            {"state": torch.randn(50, 3, generator=g) * 3, "action": torch.randn(50, 2, generator=g) + 1},
            policy.normalizer_modes(),
        )
    )
    ema_sd = {k: v + 1 if v.is_floating_point() else v for k, v in policy.state_dict().items()}
    return {
        "step": 7,
        "config": config_to_yaml({"task": {"name": "t"}, "seed": 3}),
        "build": build,
        "model": policy.state_dict(),
        "ema": ema_sd,
        "rng": rng_state(),
    }


def test_round_trip_rebuilds_the_policy_from_the_file_alone(tmp_path):
    state = _state()
    save_checkpoint(tmp_path / "a.ckpt", state)
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temp file left behind
    ckpt = load_checkpoint(tmp_path / "a.ckpt")
    assert ckpt["step"] == 7 and ckpt["version"] == FORMAT_VERSION
    assert checkpoint_config(ckpt) == {"task": {"name": "t"}, "seed": 3}
    raw = ChunkPolicy.from_checkpoint(tmp_path / "a.ckpt", use_ema=False)
    ema = ChunkPolicy.from_checkpoint(tmp_path / "a.ckpt")
    assert not raw.training and not ema.training
    for key, value in state["model"].items():
        assert torch.equal(raw.state_dict()[key], value)
        assert torch.equal(ema.state_dict()[key], state["ema"][key])
    obs = {"state": torch.randn(2, 2, 3)}
    out = raw.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (2, 4, 2)


FEW_STEP = {
    "shortcut": (
        {"_target_": "policy.shortcut.ShortcutFlow", "max_steps": 8},
        {"_target_": "policy.samplers.ShortcutSampler", "num_steps": 1},
    ),
    "consistency": (
        {
            "_target_": "policy.consistency.ConsistencyDistillation",
            "num_intervals": 10,
            "teacher_objective": {"_target_": "policy.objectives.DDPM", "num_train_steps": 50},
        },
        {"_target_": "policy.samplers.ConsistencySampler", "num_steps": 1},
    ),
}


@pytest.mark.parametrize("kind", sorted(FEW_STEP))
def test_few_step_models_round_trip_with_their_kind_and_refuse_other_samplers(tmp_path, kind):
    objective, sampler = FEW_STEP[kind]
    build = {**BUILD, "objective": objective, "sampler": sampler}
    state = _state(build=build)
    save_checkpoint(tmp_path / "a.ckpt", state)
    policy = ChunkPolicy.from_checkpoint(tmp_path / "a.ckpt")  # EMA weights: every one moved off its init
    reference = ChunkPolicy.from_config(build["policy"], objective, sampler, META)
    reference.load_state_dict(state["ema"])
    assert policy.objective == reference.objective and policy.objective.kind == kind
    if kind == "shortcut":
        assert policy.denoiser.step_embedding is not None
    else:
        assert policy.objective.teacher_objective == DDPM(num_train_steps=50)
    obs = {"state": torch.randn(3, 2, 3)}
    for steps in (1, 2):
        got = policy.predict_action(obs, num_steps=steps, generator=torch.Generator().manual_seed(0))
        expected = reference.eval().predict_action(obs, num_steps=steps, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(got["action_pred"], expected["action_pred"])
    with pytest.raises(ValueError, match=f"valid samplers for {kind}: {kind}"):
        policy.predict_action(obs, sampler=EulerSampler())


def test_rng_state_restores_the_random_stream():
    state = rng_state()
    first = torch.rand(4)
    set_rng_state(state)
    assert torch.equal(torch.rand(4), first)


def test_missing_truncated_foreign_and_unsafe_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    save_checkpoint(tmp_path / "a.ckpt", _state())
    data = (tmp_path / "a.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not an actchunk checkpoint"):
        load_checkpoint(tmp_path / "foreign.ckpt")
    save_checkpoint(tmp_path / "old.ckpt", {**_state(), "version": FORMAT_VERSION + 1})
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(tmp_path / "old.ckpt")
    with open(tmp_path / "evil.ckpt", "wb") as f:
        torch.save({"format": "actchunk.checkpoint", "obj": PurePosixPath("x")}, f)  # needs a class import to unpickle
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(tmp_path / "evil.ckpt")


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    state = _state()
    wrong = {**BUILD, "policy": {**BUILD["policy"], "denoiser": {**BUILD["policy"]["denoiser"], "down_dims": [8, 16]}}}
    save_checkpoint(tmp_path / "a.ckpt", {**state, "build": wrong})
    with pytest.raises(CheckpointError, match="do not fit"):
        ChunkPolicy.from_checkpoint(tmp_path / "a.ckpt")


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "a.ckpt", _state(0))
    before = (tmp_path / "a.ckpt").read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "a.ckpt", _state(1))
    assert (tmp_path / "a.ckpt").read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def _tensor_offset(path, entry_suffix: str) -> int:
    """Byte offset of an entry's data inside the zip (after its local header)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(entry_suffix))
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def test_flipped_bytes_random_bytes_and_pickles_are_named_and_never_the_unsafe_advice(tmp_path):
    save_checkpoint(tmp_path / "a.ckpt", _state())
    raw = bytearray((tmp_path / "a.ckpt").read_bytes())
    raw[_tensor_offset(tmp_path / "a.ckpt", "/data/0") + 5] ^= 0x01  # one bit of one tensor
    (tmp_path / "flip.ckpt").write_bytes(bytes(raw))
    messages = []
    with pytest.raises(CheckpointError, match=r"is damaged: entry .*/data/0 fails its CRC-32 check") as caught:
        load_checkpoint(tmp_path / "flip.ckpt")
    messages.append(str(caught.value))
    (tmp_path / "random.ckpt").write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match=r"random.ckpt is not a checkpoint \(torch.save writes a zip") as caught:
        load_checkpoint(tmp_path / "random.ckpt")
    messages.append(str(caught.value))
    with open(tmp_path / "evil.ckpt", "wb") as f:
        torch.save({"format": "actchunk.checkpoint", "obj": PurePosixPath("x")}, f)
    with pytest.raises(CheckpointError, match=r"holds pickled Python objects such as pathlib.PurePosixPath") as caught:
        load_checkpoint(tmp_path / "evil.ckpt")
    messages.append(str(caught.value))
    assert all("weights_only" not in m and "\n" not in m for m in messages)


def test_checkpoints_are_written_with_the_users_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "a.ckpt", _state())
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.ckpt").stat().st_mode) == 0o640
