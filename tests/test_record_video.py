"""Tests for data.record_video (expert rollout videos)."""

from __future__ import annotations

import imageio.v2 as imageio
import pytest

from data.record_video import HOLD_STEPS, record_expert_video


def test_writes_every_frame_of_the_expert_episodes(tmp_path):
    out = tmp_path / "videos" / "push_around.mp4"
    result = record_expert_video("actchunk/PushAround-v0", out, episodes=2, seed=2, render_size=64)
    assert result["out"] == str(out) and out.exists()
    assert not list(out.parent.glob(".*tmp*"))  # written via a temp file, then renamed
    episodes = result["episodes"]
    assert [e["seed"] for e in episodes] == [2, 3] and all(e["success"] for e in episodes)
    frames = [frame for frame in imageio.get_reader(str(out), format="ffmpeg")]  # len() of the reader is inf
    assert len(frames) == sum(e["steps"] + 1 for e in episodes)  # reset frame + one per step
    assert all(e["steps"] > HOLD_STEPS for e in episodes)
    assert frames[0].shape == (64, 64, 3)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="episodes"):
        record_expert_video("actchunk/PushAround-v0", tmp_path / "x.mp4", episodes=0)
    with pytest.raises(ValueError, match="unknown env id"):
        record_expert_video("actchunk/Nope-v0", tmp_path / "x.mp4")
