"""Tests for benchmarks/bench_train_speed.py: the rate excludes warmup, and every case composes."""

from __future__ import annotations

import json

import pytest

import bench_train_speed
from training_runs import compose_train_config


def test_rate_counts_training_time_between_warmup_and_the_last_record(tmp_path):
    records = [{"step": 10, "train_time_s": 5.0}, {"step": 30, "train_time_s": 6.0}, {"step": 50, "train_time_s": 8.0}]
    records.append({"step": 50, "val_loss": 0.1})  # records without training time are ignored
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert bench_train_speed.rate(tmp_path, warmup=20) == pytest.approx((50 - 30) / (8.0 - 6.0))


@pytest.mark.parametrize("pair", sorted(bench_train_speed.PAIRS))
def test_every_case_is_a_valid_train_config(pair):
    store, cases = bench_train_speed.PAIRS[pair]
    built = {case: compose_train_config([*store, *overrides, "name=x"]) for case, (_, overrides) in cases.items()}
    assert all(cfg.task.env_id for cfg in built.values())
    if pair == "metaworld-image":
        new, old = built["new"], built["old"]
        assert (new.policy.n_obs_steps, old.policy.n_obs_steps) == (2, 2) and new.policy.horizon == 4
        assert list(new.policy.denoiser.down_dims) == [32, 64, 128] and new.policy.encoder.small_activation == "silu"
        assert new.task.env_kwargs.image_size == old.task.env_kwargs.image_size == 84
        assert (old.policy.horizon, old.training.max_steps, old.rollout.every) == (16, 2000, 0)  # no recipe
    if pair == "push_t-state":
        new, old = built["new"], built["old"]
        assert new.obs == old.obs == "state" and old.amp is True and new.amp == "auto"  # auto: fp32 for low-dim
        assert (new.training.batch_size, old.training.batch_size) == (128, 64)
        assert list(new.policy.denoiser.down_dims) == [32, 64, 128] and new.policy.n_action_steps == 2
        assert list(old.policy.denoiser.down_dims) == [64, 128, 256] and old.policy.n_action_steps == 8
