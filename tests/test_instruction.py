"""Tests for policy/instruction.py and instruction-conditioned ChunkPolicy: null rows, CFG with every sampler, errors,
checkpoints, and a bimodal PickPlace-like task where the instruction picks the mode."""

import copy

import pytest
import torch

from data.normalizer import Normalizer
from policy.checkpoint import config_to_yaml, save_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.instruction import InstructionConditioner, check_instructions, concat_encodings
from policy.text_encoder import VocabularyTextEncoder, build_vocabulary

LEFT, RIGHT = "put the cube in the left bin", "put the cube in the right bin"
META = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
UNET = {"_target_": "policy.unet.ConditionalUnet1D", "down_dims": [16, 32], "diffusion_step_embed_dim": 16}
TRANSFORMER = {
    "_target_": "policy.transformer.DiffusionTransformer",
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 2,
    "diffusion_step_embed_dim": 16,
}
FLOW = {"_target_": "policy.objectives.FlowMatching"}
DDPM = {"_target_": "policy.objectives.DDPM", "num_train_steps": 20}
SHORTCUT = {"_target_": "policy.shortcut.ShortcutFlow", "max_steps": 4}
CONSISTENCY = {"_target_": "policy.consistency.ConsistencyDistillation", "num_intervals": 4}


def _policy_cfg(denoiser=UNET, conditioned=True, p_uncond=0.2, dim=16) -> dict:
    cfg = {
        "horizon": 8,
        "n_obs_steps": 2,
        "n_action_steps": 4,
        "encoder": {"_target_": "policy.obs_encoder.ObsEncoder", "backbone": "small"},
        "denoiser": denoiser,
    }
    if conditioned:
        text = {
            "_target_": "policy.text_encoder.VocabularyTextEncoder",
            "vocabulary": build_vocabulary([LEFT, RIGHT]),
            "dim": dim,
            "n_layers": 1,
            "n_heads": 2,
        }
        cfg["instruction"] = {"text_encoder": text, "p_uncond": p_uncond, "tasks": {}}
    return cfg


def _policy(denoiser=UNET, objective=FLOW, sampler=None, conditioned=True, seed=0, **kw) -> ChunkPolicy:
    torch.manual_seed(seed)
    sampler = sampler or {"_target_": "policy.samplers.EulerSampler", "num_steps": 3}
    policy = ChunkPolicy.from_config(_policy_cfg(denoiser, conditioned, **kw), objective, sampler, META)
    g = torch.Generator().manual_seed(seed)
    data = {"state": torch.randn(50, 3, generator=g), "action": torch.randn(50, 2, generator=g)}
    policy.set_normalizer(Normalizer.fit(data, policy.normalizer_modes()))
    return policy


def _obs(batch=3, seed=0):
    return {"state": torch.randn(batch, 2, 3, generator=torch.Generator().manual_seed(seed))}


def _reference(policy, obs, sampler, texts, scale, num_steps=None, seed=0):
    """The guided chunk computed by hand from separate conditional and unconditional passes (B rows each)."""
    with torch.no_grad():
        cond = policy.encode(obs)
        b = cond.shape[0]
        conditional = policy.bind(cond, policy.instruction(texts))
        unconditional = policy.bind(cond, policy.instruction.null(b))

        def guided(x, *per_row):
            out_c, out_u = conditional(x, *per_row), unconditional(x, *per_row)
            return out_u + scale * (out_c - out_u)

        denoise = {0.0: unconditional, 1.0: conditional}.get(scale, guided)
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((b, policy.horizon, policy.action_dim), generator=g)
        sample = sampler.sample(denoise, policy.objective, noise, num_steps=num_steps, generator=g)
        return policy.normalizer.unnormalize_key("action", sample)


SAMPLER_CASES = [
    (FLOW, "euler", None),
    (FLOW, "midpoint", 2),
    (FLOW, "heun", 2),
    (DDPM, "ddpm", 4),
    (DDPM, "ddim", 3),
    (DDPM, "dpmsolver", 4),
    (SHORTCUT, "shortcut", 2),
    (CONSISTENCY, "consistency", 2),
]


@pytest.mark.parametrize(("objective", "name", "steps"), SAMPLER_CASES, ids=[c[1] for c in SAMPLER_CASES])
@pytest.mark.parametrize("denoiser", [UNET, TRANSFORMER], ids=["unet", "transformer"])
def test_guidance_scales_with_every_sampler(objective, name, steps, denoiser):
    policy = _policy(denoiser, objective, {"_target_": "policy.samplers.make_sampler", "name": name}).eval()
    with torch.no_grad():  # off the zero init (the transformer's output layers), so the instruction matters
        for p in policy.denoiser.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs, texts = _obs(), [LEFT, RIGHT, LEFT]

    def predict(scale):
        g = torch.Generator().manual_seed(0)
        out = policy.predict_action(obs, num_steps=steps, generator=g, instruction=texts, guidance_scale=scale)
        return out["action_pred"]

    for scale in (0.0, 1.0):  # one pass on B rows: exactly the conditional / unconditional model
        assert torch.equal(predict(scale), _reference(policy, obs, policy.sampler, texts, scale, steps))
    guided = predict(2.0)
    torch.testing.assert_close(guided, _reference(policy, obs, policy.sampler, texts, 2.0, steps))
    assert not torch.allclose(guided, predict(1.0))


def test_guided_chunks_take_one_denoiser_call_per_step_on_a_doubled_batch():
    policy = _policy(sampler={"_target_": "policy.samplers.EulerSampler", "num_steps": 5}).eval()
    rows = []
    bind = policy.denoiser.bind

    def counting_bind(cond, text=None):
        denoise = bind(cond, text)

        def counted(x, *per_row):
            rows.append(x.shape[0])
            return denoise(x, *per_row)

        return counted

    policy.denoiser.bind = counting_bind
    policy.predict_action(_obs(batch=3), instruction=LEFT, guidance_scale=3.0)
    assert rows == [6] * policy.sampler.nfe()
    rows.clear()
    policy.predict_action(_obs(batch=3), instruction=LEFT)
    assert rows == [3] * policy.sampler.nfe()


def test_rtc_guidance_runs_through_classifier_free_guidance():
    from policy.rtc import Guidance

    policy = _policy().eval()
    obs = _obs(batch=2)
    previous = policy.predict_action(obs, instruction=LEFT, generator=torch.Generator().manual_seed(1))["action_pred"]
    weights = torch.zeros(2, policy.horizon)
    weights[:, :4] = 1.0
    frozen = torch.zeros(2, policy.horizon, dtype=torch.bool)
    frozen[:, :2] = True
    guided = Guidance(target=previous, weights=weights, frozen=frozen, beta=5.0)
    out = policy.predict_action(obs, instruction=RIGHT, guidance_scale=2.0, guidance=guided)["action_pred"]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :2], previous[:, :2])
    free = policy.predict_action(obs, instruction=RIGHT, guidance_scale=2.0)["action_pred"]
    assert (out[:, 2:4] - previous[:, 2:4]).abs().mean() < (free[:, 2:4] - previous[:, 2:4]).abs().mean()


def test_training_replaces_rows_with_the_null_instruction():
    conditioner = InstructionConditioner(VocabularyTextEncoder(build_vocabulary([LEFT, RIGHT]), dim=8, n_heads=2), 0.5)
    drop = torch.tensor([True, False, True])
    encoding = conditioner([LEFT, RIGHT, "left"], drop)
    plain = conditioner([LEFT, RIGHT, "left"])
    torch.testing.assert_close(encoding.pooled[1], plain.pooled[1])
    torch.testing.assert_close(encoding.pooled[0], conditioner.null_pooled)
    assert encoding.mask[0].tolist() == [True] + [False] * (encoding.mask.shape[1] - 1)
    torch.testing.assert_close(encoding.tokens[0, 0], conditioner.null_token[0])
    assert conditioner.draw_drop(10_000, torch.device("cpu")).float().mean().item() == pytest.approx(0.5, abs=0.03)
    both = concat_encodings(plain, conditioner.null(3))
    assert both.tokens.shape[0] == 6 and both.mask[3:, 1:].sum() == 0


def test_loss_uses_instructions_and_unconditioned_policies_ignore_them():
    policy = _policy(p_uncond=0.5)
    batch = {**_obs(batch=4), "action": torch.randn(4, 8, 2), "instruction": [LEFT, RIGHT, LEFT, RIGHT]}
    loss = policy.compute_loss(batch)
    loss.backward()
    assert policy.instruction.null_pooled.grad is not None
    assert policy.instruction.text_encoder.embed.weight.grad is not None
    plain = _policy(conditioned=False)
    assert torch.isfinite(plain.compute_loss(batch))
    with pytest.raises(ValueError, match="batch has no 'instruction'"):
        policy.compute_loss({k: v for k, v in batch.items() if k != "instruction"})


def test_bad_instruction_input_is_a_one_line_error():
    conditioned, plain = _policy().eval(), _policy(conditioned=False).eval()
    obs = _obs()
    cases = [
        (plain, {"instruction": LEFT}, "trained without instructions; drop instruction="),
        (plain, {"guidance_scale": 2.0}, "needs an instruction-conditioned policy"),
        (conditioned, {}, "pass instruction="),
        (conditioned, {"instruction": "  "}, "instruction 0 is empty"),
        (conditioned, {"instruction": "", "guidance_scale": 0.0}, "instruction 0 is empty"),
        (conditioned, {"instruction": [LEFT, RIGHT]}, "2 instructions for a batch of 3"),
        (conditioned, {"instruction": LEFT, "guidance_scale": -1.0}, "guidance_scale"),
    ]
    for policy, kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            policy.predict_action(obs, **kwargs)
        assert "\n" not in str(info.value)
    conditioned.predict_action(obs, guidance_scale=0.0)  # the unconditional model needs no instruction
    with pytest.warns(UserWarning, match=r"\['blue'\]"):
        conditioned.predict_action(obs, instruction="put the cube in the blue bin")
    with pytest.raises(ValueError, match="not a string"):
        check_instructions([LEFT, 3], 2)


def test_checkpoint_rebuilds_the_instruction_encoder_alone(tmp_path):
    policy = _policy(TRANSFORMER)
    build = {
        "policy": _policy_cfg(TRANSFORMER),
        "objective": FLOW,
        "sampler": {"_target_": "policy.samplers.EulerSampler", "num_steps": 3},
        "shape_meta": META,
    }
    state = {"step": 1, "config": config_to_yaml({"task": {"name": "t"}}), "build": build, "model": policy.state_dict()}
    save_checkpoint(tmp_path / "a.ckpt", state)
    loaded = ChunkPolicy.from_checkpoint(tmp_path / "a.ckpt")
    assert loaded.conditioned and loaded.instruction.text_encoder.vocabulary == build_vocabulary([LEFT, RIGHT])
    assert loaded.instruction_config["p_uncond"] == 0.2
    policy.eval()
    for scale in (1.0, 2.0):
        a = policy.predict_action(
            _obs(), instruction=LEFT, guidance_scale=scale, generator=torch.Generator().manual_seed(0)
        )
        b = loaded.predict_action(
            _obs(), instruction=LEFT, guidance_scale=scale, generator=torch.Generator().manual_seed(0)
        )
        torch.testing.assert_close(a["action_pred"], b["action_pred"])
    plain_build = copy.deepcopy(build)
    del plain_build["policy"]["instruction"]  # a checkpoint from before instructions loads as before
    plain = _policy(TRANSFORMER, conditioned=False)
    save_checkpoint(tmp_path / "old.ckpt", {**state, "build": plain_build, "model": plain.state_dict()})
    old = ChunkPolicy.from_checkpoint(tmp_path / "old.ckpt")
    assert not old.conditioned and not any(k.startswith("instruction") for k in old.state_dict())


def _bimodal_batch(n: int, g: torch.Generator) -> dict:
    """PickPlace-like: one observation distribution, two demonstrated chunks (left -1, right +1) by instruction."""
    right = torch.rand(n, generator=g) < 0.5
    level = torch.where(right, 1.0, -1.0)[:, None, None]
    action = level + 0.05 * torch.randn(n, 8, 2, generator=g)  # (n, 8, 2)
    obs = 0.1 * torch.randn(n, 2, 3, generator=g)
    return {"state": obs, "action": action, "instruction": [RIGHT if r else LEFT for r in right.tolist()]}


def test_bimodal_task_follows_the_instruction_and_the_unconditional_model_keeps_both_modes():
    torch.manual_seed(0)
    policy = _policy(p_uncond=0.2, dim=16)
    g = torch.Generator().manual_seed(0)
    fit = _bimodal_batch(512, g)
    policy.set_normalizer(
        Normalizer.fit(
            {"state": fit["state"].flatten(0, 1), "action": fit["action"].flatten(0, 1)}, policy.normalizer_modes()
        )
    )
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    policy.train()
    for _ in range(400):
        loss = policy.compute_loss(_bimodal_batch(64, g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.eval()
    obs = {"state": 0.1 * torch.randn(200, 2, 3, generator=g)}
    generator = torch.Generator().manual_seed(1)
    left = policy.predict_action(obs, instruction=LEFT, generator=generator)["action_pred"].mean(dim=(1, 2))
    right = policy.predict_action(obs, instruction=RIGHT, guidance_scale=2.0, generator=generator)["action_pred"]
    unconditional = policy.predict_action(obs, guidance_scale=0.0, generator=generator)["action_pred"].mean(dim=(1, 2))
    assert (left < 0).float().mean() >= 0.9
    assert (right.mean(dim=(1, 2)) > 0).float().mean() >= 0.9
    assert 0.2 <= (unconditional < 0).float().mean() <= 0.8
