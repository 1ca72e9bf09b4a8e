"""Tests for benchmarks/probe_features.py: the leave-one-episode-out ridge, feature slicing, the report, bad input."""

from __future__ import annotations

import json

import numpy as np
import probe_features
import pytest
from test_eval import IMAGE_SIZE, _checkpoint

from data.replay_buffer import ReplayBuffer
from training_runs import BenchmarkError


def _episodes(n_episodes=8, length=12, seed=0):
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(n_episodes), length), rng


def test_ridge_recovers_a_linear_target_and_finds_nothing_in_noise():
    episode, rng = _episodes()
    target = rng.normal(size=(len(episode), 2))  # (N, 2)
    mixed = target @ rng.normal(size=(2, 6)) + 0.01 * rng.normal(size=(len(episode), 6))  # (N, 6) encodes it
    noise = rng.normal(size=(len(episode), 6))  # (N, 6) independent of it
    located = probe_features.probe_scores(probe_features.ridge_loeo(mixed, target, episode), target)
    blind = probe_features.probe_scores(probe_features.ridge_loeo(noise, target, episode), target)
    assert min(located["r2"]) > 0.99 and located["mean_r2"] > 0.99
    assert max(blind["r2"]) < 0.2  # held-out episodes: fitting noise does not leak into the score
    assert np.allclose(blind["sd"], target.std(0))


def test_the_held_out_episode_never_trains_its_own_fit():
    episode, rng = _episodes(n_episodes=4, length=5)
    per_episode = rng.normal(size=(4, 1))
    target = per_episode[episode]  # (N, 1): one value per episode
    one_hot = np.eye(4)[episode]  # (N, 4): says which episode a frame is from, nothing that carries over
    scores = probe_features.probe_scores(probe_features.ridge_loeo(one_hot, target, episode), target)
    assert scores["r2"][0] < 0  # in-sample it would fit exactly (R^2 1)


def test_mean_r2_skips_dimensions_that_do_not_vary():
    target = np.c_[np.arange(10.0), np.full(10, 3.0)]
    scores = probe_features.probe_scores(target.copy(), target)
    assert scores["r2"] == [1.0, 0.0] and scores["mean_r2"] == 1.0


@pytest.mark.parametrize(
    ("text", "parsed"), [("state", ("state", 0, None)), ("state:4:7", ("state", 4, 7)), ("obj:0:1", ("obj", 0, 1))]
)
def test_target_parsing(text, parsed):
    assert probe_features.parse_target(text) == parsed


@pytest.mark.parametrize("text", ["state:4", "state:a:b", "state:5:5", ":1:2"])
def test_bad_targets_are_refused(text):
    with pytest.raises(SystemExit):
        probe_features.parse_args(["--model", "m", "c", "s", "--target", text])


def test_a_model_or_a_bench_dir_is_required(tmp_path):
    with pytest.raises(SystemExit):
        probe_features.parse_args([])
    with pytest.raises(SystemExit):
        probe_features.parse_args(["--bench-dir", str(tmp_path / "missing")])


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """A bench_metaworld-shaped work dir: one task, its store and one tiny image model."""
    root = tmp_path_factory.mktemp("probe") / "work"
    task = root / "tiny-v3"
    ckpt = _checkpoint(task / "flow_seed0" / "checkpoints" / "latest.ckpt")
    rng = np.random.default_rng(1)
    store = ReplayBuffer.create(task / "demos_24px.zarr")
    for _ in range(6):
        t = 14
        pos = rng.uniform(-0.2, 0.2, size=(t, 2)).astype(np.float32)  # (T, 2) agent_pos: the target itself
        store.add_episode(
            {
                "image": rng.integers(0, 256, size=(t, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),  # says nothing
                "agent_pos": pos,
                "state": np.c_[rng.normal(size=(t, 3)), pos].astype(np.float32),  # (T, 5): target in dims 3:5
                "action": pos,
            }
        )
    store.close()
    return {"root": root, "ckpt": ckpt, "store": task / "demos_24px.zarr"}


def test_image_features_and_low_dim_observations_are_probed_apart(bench_dir, tmp_path):
    argv = ["--bench-dir", str(bench_dir["root"]), "--target", "state:3:5", "--early", "4", "--out", str(tmp_path)]
    payload = probe_features.run_probe(probe_features.parse_args(argv), argv, progress=False)
    (model,) = payload["models"]
    assert model["name"] == "tiny-v3 flow_seed0" and model["frames"] == 84 and model["episodes"] == 6
    probes = {(p["frames"], p["predictor"]): p for p in model["probes"]}
    assert set(probes) == {(f, p) for f in ("all", "first 4") for p in probe_features.PREDICTORS}
    assert probes["all", "image"]["n_frames"] == 84 and probes["first 4", "image"]["n_frames"] == 6 * 4
    assert probes["all", "low_dim"]["mean_r2"] > 0.99  # agent_pos is the target
    assert probes["all", "image"]["mean_r2"] < 0.3  # random images: only a leak of agent_pos would locate it
    assert probes["all", "image + low_dim"]["mean_r2"] > 0.9
    assert model["image_features"] == 8 and model["low_dim_keys"] == ["agent_pos"]
    saved = json.loads((tmp_path / "probe_features.json").read_text())
    assert saved["target"] == ["state", 3, 5] and saved["models"][0]["probes"] == model["probes"]
    table = (tmp_path / "probe_features.md").read_text()
    assert table.count("| tiny-v3 flow_seed0 |") == 6 and "state[3:5]" in table
    assert table.count("| first 4 (24 frames, 6 episodes) |") == 3


def test_bad_input_names_the_problem(bench_dir, tmp_path):
    ckpt, store = bench_dir["ckpt"], bench_dir["store"]
    with pytest.raises(BenchmarkError, match="missing.zarr .store of model m. does not exist"):
        probe_features.probe_model("m", ckpt, tmp_path / "missing.zarr", ("state", 0, None))
    with pytest.raises(BenchmarkError, match="beyond state's 5 dimensions"):
        probe_features.probe_model("m", ckpt, store, ("state", 4, 9))
    with pytest.raises(BenchmarkError, match=r"has no \['goal'\]"):
        probe_features.probe_model("m", ckpt, store, ("goal", 0, None))
    with pytest.raises(BenchmarkError, match="holds no <task>/demos_"):
        probe_features.bench_dir_models(tmp_path)
