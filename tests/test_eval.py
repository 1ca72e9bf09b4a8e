"""Tests for eval.py, policy/evaluation.py and configs/eval.yaml: CLI, results fields, videos, sweeps, bad inputs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import eval as eval_script
from configs import unknown_option
from data.normalizer import Normalizer
from envs.task_env import TaskEnv
from policy import evaluation
from policy.checkpoint import CheckpointError, config_to_yaml, save_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.execution import Execution

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
IMAGE_SIZE = 24


def _task_cfg(max_steps=6):
    task = yaml.safe_load((CONFIGS / "task" / "push_around.yaml").read_text())
    task["env_kwargs"]["image_size"] = IMAGE_SIZE
    task["env_kwargs"]["render_size"] = 32
    task["max_episode_steps"] = max_steps
    shape = [IMAGE_SIZE, IMAGE_SIZE, 3]
    task["shape_meta"]["obs"]["image"]["shape"] = shape
    task["state_shape_meta"] = None
    return task


def _build(shape_meta, objective="DDPM", sampler="DDIMSampler", instructions=None):
    policy_cfg = {
        "horizon": 8,
        "n_obs_steps": 2,
        "n_action_steps": 4,
        "encoder": {
            "_target_": "policy.obs_encoder.ObsEncoder",
            "backbone": "small",
            "crop_shape": [20, 20],
            "feature_dim": 8,
            "num_keypoints": 4,
        },
        "denoiser": {
            "_target_": "policy.unet.ConditionalUnet1D",
            "down_dims": [16, 32],
            "diffusion_step_embed_dim": 16,
        },
    }
    if instructions is not None:
        text = {"_target_": "policy.text_encoder.VocabularyTextEncoder", "dim": 8, "n_heads": 2}
        text["vocabulary"] = sorted({w for t in instructions for w in t.split()})
        policy_cfg["instruction"] = {"text_encoder": text, "p_uncond": 0.1, "tasks": {}}
    build = {
        "policy": policy_cfg,
        "objective": {"_target_": f"policy.objectives.{objective}"},
        "sampler": {"_target_": f"policy.samplers.{sampler}", "num_steps": 2},
        "shape_meta": shape_meta,
    }
    torch.manual_seed(0)
    policy = ChunkPolicy.from_config(build["policy"], build["objective"], build["sampler"], shape_meta)
    g = torch.Generator().manual_seed(0)
    data = {"action": torch.rand(32, 2, generator=g) * 0.4 - 0.2}
    for key, meta in shape_meta["obs"].items():
        if meta["type"] == "rgb":
            data[key] = torch.randint(0, 256, (32, *meta["shape"]), dtype=torch.uint8, generator=g)
        else:
            data[key] = torch.rand(32, *meta["shape"], generator=g) * 0.4 - 0.2
    policy.set_normalizer(Normalizer.fit(data, policy.normalizer_modes()))
    return policy, build


def _checkpoint(path: Path, shape_meta=None, **kwargs) -> Path:
    task = _task_cfg()
    policy, build = _build(shape_meta or task["shape_meta"], **kwargs)
    save_checkpoint(
        path,
        {
            "step": 7,
            "config": config_to_yaml({"task": task, "name": "tiny", "seed": 0}),
            "build": build,
            "model": policy.state_dict(),
            "ema": None,
        },
    )
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "latest.ckpt")


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="eval", overrides=list(overrides))


def test_cli_writes_results_json_table_and_videos(ckpt):
    proc = subprocess.run(
        [
            sys.executable,
            "eval.py",
            f"checkpoint={ckpt}",
            "n_episodes=2",
            "n_envs=2",
            "n_videos=1",
            "sampler=ddim",
            "sampler.num_steps=3",
            "progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out_dir = next((ckpt.parent.parent / "eval").iterdir())  # default: <run dir>/eval/<time>_ddim-3
    assert out_dir.name.endswith("_ddim-3")
    res = json.loads((out_dir / "results.json").read_text())
    assert (
        res["checkpoint"] == str(ckpt) and res["step"] == 7 and res["sampler"] == "ddim" and res["weights"] == "model"
    )
    assert res["num_steps"] == 3 and res["nfe"] == 3 and res["n_episodes"] == 2
    assert [e["seed"] for e in res["episodes"]] == [100000, 100001]
    assert all(e["length"] == 6 and e["error"] is None for e in res["episodes"])  # untrained: runs to the time limit
    low, high = res["success_ci95"]
    assert 0 <= low <= res["success_rate"] <= high <= 1
    assert res["latency_ms"]["calls"] >= 2 and res["latency_ms"]["median"] <= res["latency_ms"]["p90"]
    outcome = "success" if res["episodes"][0]["success"] else "failure"
    video = out_dir / "videos" / f"episode_0_seed100000_{outcome}.mp4"
    assert res["videos"] == [str(video)] and video.stat().st_size > 0
    assert "| ddim | 3 | 3 |" in proc.stdout and "| ddim | 3 | 3 |" in (out_dir / "results.md").read_text()


def test_sweep_runs_valid_pairs_on_the_same_seeds_and_skips_invalid_ones(ckpt, tmp_path, capsys):
    cfg = _cfg(
        f"checkpoint={ckpt}",
        "n_episodes=2",
        "n_envs=1",
        "n_videos=0",
        "progress=false",
        "sweep.samplers=[ddim,euler]",
        "sweep.num_steps=[1,2]",
        f"out_dir={tmp_path}",
    )
    payload = eval_script.run(cfg)
    assert [(c["sampler"], c["num_steps"]) for c in payload["cells"]] == [("ddim", 1), ("ddim", 2)]
    assert all([e["seed"] for e in c["episodes"]] == [100000, 100001] for c in payload["cells"])
    assert len(payload["skipped"]) == 2 and "euler" in payload["skipped"][0]
    assert "skipped euler x 1 steps" in capsys.readouterr().out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["cells"]) == 2 and (tmp_path / "results.md").read_text().count("| ddim |") == 2


def test_same_seed_reproduces_rollouts_and_sampler_names_resolve(ckpt):
    policy = ChunkPolicy.from_checkpoint(ckpt)
    task = _task_cfg(max_steps=4)
    runs = [
        evaluation.evaluate(
            policy,
            TaskEnv.from_config(task),
            n_episodes=2,
            n_envs=1,
            seed=5,
            sampler="ddpm",
            num_steps=2,
            progress=False,
        )
        for _ in range(2)
    ]
    assert runs[0]["episodes"] == runs[1]["episodes"] and runs[0]["sampler"] == "ddpm"
    assert evaluation.resolve_sampler(policy, "ddim") is policy.sampler
    full = evaluation.evaluate(
        policy,
        TaskEnv.from_config(task | {"max_episode_steps": 1}),
        n_episodes=1,
        n_envs=1,
        seed=5,
        sampler="ddpm",
        progress=False,
    )
    assert full["num_steps"] == 100 and full["nfe"] == 100  # ddpm with null steps runs the full training chain
    ensembled = evaluation.evaluate(
        policy, TaskEnv.from_config(task), n_episodes=1, n_envs=1, seed=5, temporal_ensemble_k=0.1, progress=False
    )
    assert ensembled["latency_ms"]["calls"] == 4 and ensembled["temporal_ensemble_k"] == 0.1  # one plan per step


def test_wilson_interval_matches_known_values():
    assert evaluation.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert evaluation.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert evaluation.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_normalized_score_is_diffusion_policys_clipped_coverage_ratio():
    episodes = [
        {"success": s, "max_reward": r, "final_reward": r, "length": 3, "error": None}
        for s, r in ((0, 0.475), (1, 0.99))
    ]
    summary = evaluation.summarize(episodes, [0.01], 1.0, success_reward=0.95)
    assert summary["normalized_score"] == pytest.approx((0.5 + 1.0) / 2)  # 0.475 / 0.95, and 0.99 clipped to 1
    assert summary["mean_max_reward"] == pytest.approx((0.475 + 0.99) / 2)
    assert evaluation.summarize(episodes, [0.01], 1.0)["normalized_score"] is None  # a task without a threshold


def test_missing_and_truncated_checkpoints_are_one_line_errors(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match="does not exist"):
        eval_script.run(_cfg(f"checkpoint={tmp_path / 'nope.ckpt'}"))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        eval_script.run(_cfg(f"checkpoint={truncated}"))
    proc = subprocess.run(
        [sys.executable, "eval.py", f"checkpoint={truncated}"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "corrupt or truncated" in proc.stderr


def test_observation_key_mismatch_names_both_sides(tmp_path):
    state_meta = {"obs": {"state": {"shape": [9], "type": "low_dim"}}, "action": {"shape": [2]}}
    path = _checkpoint(tmp_path / "state.ckpt", shape_meta=state_meta)
    with pytest.raises(evaluation.EvalError, match=r"checkpoint observations \{'state': \(9,\)\}.*'agent_pos': \(2,\)"):
        eval_script.run(_cfg(f"checkpoint={path}", f"out_dir={tmp_path / 'out'}"))


def test_unknown_sampler_option_and_config_key_are_hydra_errors_with_the_options():
    with pytest.raises(ConfigCompositionException, match=r"(?s)Could not find 'sampler/dddim'.*ddim.*dpmsolver.*euler"):
        _cfg("checkpoint=x", "sampler=dddim")
    with pytest.raises(ConfigCompositionException, match="n_episode"):
        _cfg("checkpoint=x", "n_episode=3")
    message = unknown_option(["checkpoint=x", "sweep.sampler=[ddim]", "n_episode=3"], "eval")
    assert message == "unknown option 'sweep.sampler'; valid options under sweep: samplers, num_steps"
    message = unknown_option(["checkpoint=x", "n_episode=3"], "eval")
    assert (
        message.startswith("unknown option 'n_episode'; valid options: checkpoint, use_ema") and "n_episodes" in message
    )
    assert (
        unknown_option(
            [
                "checkpoint=x",
                "sampler=ddim",
                "sampler.num_steps=3",
                "sweep.num_steps=[1]",
                "+extra=1",
                "hydra.run.dir=.",
                "--multirun",
            ],
            "eval",
        )
        is None
    )


def test_every_eval_option_has_a_default_and_a_comment():
    cfg = OmegaConf.load(CONFIGS / "eval.yaml")
    lines = [line for line in (CONFIGS / "eval.yaml").read_text().splitlines()[1:] if line.strip()]
    assert all("#" in line for line in lines if not line.rstrip().endswith(":"))
    assert OmegaConf.is_missing(cfg, "checkpoint") and cfg.seed == 100000 and cfg.sweep.samplers == []


def test_bad_sampler_settings_are_one_line_errors(ckpt, tmp_path):
    base = (f"checkpoint={ckpt}", f"out_dir={tmp_path}")
    with pytest.raises(evaluation.EvalError, match="unknown sampler 'ddimm'; valid options: ddpm, ddim"):
        eval_script.run(_cfg(*base, "sweep.samplers=[ddimm]"))
    with pytest.raises(evaluation.EvalError, match="num_steps must be an int >= 1; got 0"):
        eval_script.run(_cfg(*base, "sampler=ddim", "sampler.num_steps=0"))
    with pytest.raises(evaluation.EvalError, match="no valid .* num_steps=200 exceeds the model's num_train_steps=100"):
        eval_script.run(_cfg(*base, "sweep.num_steps=[200]"))
    assert not list(tmp_path.iterdir())


def test_checkpoint_is_required_and_its_own_sampler_takes_a_step_count_directly(ckpt):
    with pytest.raises(evaluation.EvalError, match=r"^checkpoint= is required, e.g. eval.py checkpoint=outputs/"):
        eval_script.run(_cfg())
    assert unknown_option([f"checkpoint={ckpt}", "sampler.num_steps=4"], "eval") is None
    policy = ChunkPolicy.from_checkpoint(ckpt)
    cells, skipped = eval_script.plan_cells(policy, _cfg(f"checkpoint={ckpt}", "sampler.num_steps=4"))
    assert cells == [(policy.sampler, 4)] and skipped == []  # the checkpoint's DDIM, 4 steps instead of its 2
    cells, _ = eval_script.plan_cells(policy, _cfg(f"checkpoint={ckpt}", "sampler=ddim", "sampler.num_steps=3"))
    assert cells[0][0] is not policy.sampler and cells[0][0].resolve_steps(policy.objective, cells[0][1]) == 3
    assert eval_script.plan_cells(policy, _cfg(f"checkpoint={ckpt}"))[0] == [(policy.sampler, None)]


class SlowChunks:
    """A policy whose every chunk takes a scripted 0.25 s on a fake clock (see _scripted_clock)."""

    n_obs_steps, n_action_steps, horizon, action_dim = 1, 4, 8, 2
    obs_shapes = {"state": (1,)}
    device = torch.device("cpu")

    def __init__(self, clock):
        self.clock = clock

    def predict_action(self, obs, *, sampler=None, num_steps=None, generator=None, guidance=None):
        self.clock[0] += 0.25
        chunk = torch.zeros(obs["state"].shape[0], self.horizon, 2)
        return {"action": chunk[:, :4], "action_pred": chunk}


def test_auto_delay_is_the_ceiling_of_measured_latency_times_fps_and_refused_when_too_long(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(evaluation.RecedingHorizonController.__module__ + ".time.perf_counter", lambda: clock[0])
    policy = SlowChunks(clock)
    euler = type("Euler", (), {"name": "euler"})()
    kwargs = dict(sampler=euler, num_steps=None, obs={"state": np.zeros(1, dtype=np.float32)})
    execution, latency = evaluation.resolve_execution(policy, Execution("rtc", delay="auto"), fps=10, **kwargs)
    assert latency == 0.25 and execution.delay == 3 and execution.horizon == 4  # ceil(0.25 s x 10 Hz)
    execution, _ = evaluation.resolve_execution(policy, Execution("async_blend", delay="auto"), fps=4, **kwargs)
    assert execution.delay == 1  # exactly one step: no rounding up
    with pytest.raises(evaluation.EvalError, match=r"^inference_delay=auto measured 250.0 ms at 80 fps: .* d=20 need"):
        evaluation.resolve_execution(policy, Execution("rtc", delay="auto"), fps=80, **kwargs)


def test_cli_runs_rtc_at_the_measured_delay_and_records_the_execution(ckpt, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "eval.py",
            f"checkpoint={ckpt}",
            "n_episodes=2",
            "n_envs=1",
            "n_videos=0",
            "execution=rtc",
            "inference_delay=auto",
            "execution.beta=2",
            "progress=false",
            f"out_dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["execution"] == "rtc" and res["rtc_beta"] == 2 and res["rtc_mask"] == "exp"
    assert res["execution_horizon"] == 4 and res["auto_delay_latency_ms"] > 0
    assert res["inference_delay"] == math.ceil(res["auto_delay_latency_ms"] / 1000 * 10 - 1e-9)  # push_around: 10 fps
    assert res["switch_jump"] is not None and res["n_switches"] >= 2
    assert f"| ddim | 2 | 2 | rtc | {res['inference_delay']} |" in proc.stdout


def test_invalid_execution_combinations_are_one_line_errors(ckpt, tmp_path):
    base = (f"checkpoint={ckpt}", f"out_dir={tmp_path}")
    with pytest.raises(evaluation.EvalError, match=r"^execution=sync pauses the world .* \(got 3\)"):
        eval_script.run(_cfg(*base, "inference_delay=3"))
    with pytest.raises(evaluation.EvalError, match="no valid .* d=7 need 1 <= s, d <= s <= H - d, H = .* = 7"):
        eval_script.run(_cfg(*base, "execution=async_naive", "inference_delay=7"))
    with pytest.raises(evaluation.EvalError, match="execution=rtc runs with sampler euler .* got 'dpmsolver'"):
        eval_script.run(_cfg(*base, "execution=rtc", "inference_delay=1", "sweep.samplers=[dpmsolver]"))
    with pytest.raises(evaluation.EvalError, match="temporal_ensemble_k needs execution=sync"):
        eval_script.run(_cfg(*base, "execution=rtc", "temporal_ensemble_k=0.1"))
    with pytest.raises(evaluation.EvalError, match="inference_delay must be an int >= 0 or auto; got 'soon'"):
        eval_script.run(_cfg(*base, "execution=rtc", "inference_delay=soon"))
    assert not list(tmp_path.iterdir())
    message = unknown_option(["checkpoint=x", "execution.beta=2"], "eval")
    assert message == "unknown option 'execution.beta'; valid options under execution: name, horizon"
    proc = subprocess.run(
        [sys.executable, "eval.py", f"checkpoint={ckpt}", "inference_delay=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "inference_delay must be 0" in proc.stderr


def test_instruction_and_guidance_scale_reach_every_chunk_and_the_results(tmp_path):
    sides = ["go around the left end of the wall", "go around the right end of the wall"]
    ckpt = _checkpoint(tmp_path / "run" / "checkpoints" / "latest.ckpt", instructions=sides)
    out = tmp_path / "out"
    res = eval_script.run(
        _cfg(
            f"checkpoint={ckpt}",
            "n_episodes=1",
            "n_envs=1",
            "n_videos=0",
            "progress=false",
            f"out_dir={out}",
            f"instruction={sides[0]}",
            "guidance_scale=2",
        )
    )
    assert res["instruction"] == sides[0] and res["guidance_scale"] == 2.0 and res["denoiser_batch"] == 2
    assert res["nfe"] == 2 and res["n_errors"] == 0
    assert f"| {sides[0]} | 2 | ddim |" in (out / "results.md").read_text()
    with pytest.raises(evaluation.EvalError, match="pass instruction="):
        eval_script.run(_cfg(f"checkpoint={ckpt}", "n_episodes=1", "n_envs=1", "progress=false", f"out_dir={out}"))
    with pytest.raises(evaluation.EvalError, match="instruction 0 is empty"):
        eval_script.run(_cfg(f"checkpoint={ckpt}", "n_episodes=1", "n_envs=1", f"out_dir={out}", "instruction=''"))


def test_instructions_for_a_policy_without_them_and_tasks_of_a_single_task_are_refused(ckpt, tmp_path):
    base = [f"checkpoint={ckpt}", "n_episodes=1", "n_envs=1", "progress=false", f"out_dir={tmp_path}"]
    with pytest.raises(evaluation.EvalError, match="trained without instructions; drop instruction="):
        eval_script.run(_cfg(*base, "instruction=go left"))
    with pytest.raises(evaluation.EvalError, match="needs an instruction-conditioned policy"):
        eval_script.run(_cfg(*base, "guidance_scale=2"))
    with pytest.raises(evaluation.EvalError, match="is a single task"):
        eval_script.run(_cfg(*base, "tasks=all"))


def test_n_action_steps_replans_as_often_as_asked_and_out_of_range_is_a_one_line_error(ckpt, tmp_path):
    base = (f"checkpoint={ckpt}", "n_episodes=1", "n_envs=1", "n_videos=0", "progress=false")
    own = eval_script.run(_cfg(*base, f"out_dir={tmp_path / 'own'}"))
    every = eval_script.run(_cfg(*base, f"out_dir={tmp_path / 'every'}", "n_action_steps=1"))
    assert own["n_action_steps"] == 4 and own["latency_ms"]["calls"] == 2  # 6 steps, 4 actions per chunk
    assert every["n_action_steps"] == 1 and every["latency_ms"]["calls"] == 6  # a new chunk every step
    for bad in ("0", "8", "2.5"):  # horizon 8 - 2 observation steps + 1 = 7 at most
        with pytest.raises(evaluation.EvalError, match=r"^n_action_steps must be an int in 1\.\.7 for this checkpoint"):
            eval_script.run(_cfg(*base, f"out_dir={tmp_path / 'bad'}", f"n_action_steps={bad}"))
    assert not (tmp_path / "bad").exists()
