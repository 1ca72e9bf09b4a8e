"""Tests for policy/text_encoder.py: the vocabulary encoder and the CLIP text tower (a tiny random one, offline)."""

import json
import warnings

import pytest
import torch

from data.normalizer import Normalizer
from policy.chunk_policy import ChunkPolicy
from policy.text_encoder import CLIPTextEncoder, VocabularyTextEncoder, build_vocabulary, words

LEFT, RIGHT = "put the cube in the left bin", "Put the cube in the RIGHT bin!"


def test_vocabulary_is_the_sorted_distinct_words():
    assert words(RIGHT) == ["put", "the", "cube", "in", "the", "right", "bin"]
    assert build_vocabulary([LEFT, RIGHT]) == ["bin", "cube", "in", "left", "put", "right", "the"]


def test_vocabulary_encoder_shapes_mask_and_padding_invariance():
    torch.manual_seed(0)
    encoder = VocabularyTextEncoder(build_vocabulary([LEFT, RIGHT]), dim=16, n_layers=1, n_heads=2).eval()
    out = encoder([LEFT, "left bin"])
    assert out.tokens.shape == (2, 7, 16) and out.pooled.shape == (2, 16)
    assert out.mask.tolist() == [[True] * 7, [True, True] + [False] * 5]
    alone = encoder(["left bin"])  # padding in a batch changes nothing
    torch.testing.assert_close(out.pooled[1], alone.pooled[0])
    assert not torch.allclose(encoder([LEFT]).pooled, encoder([RIGHT]).pooled)


def test_unknown_words_map_to_one_token_and_are_reported_once():
    encoder = VocabularyTextEncoder(build_vocabulary([LEFT]), dim=8, n_heads=2)
    with pytest.warns(UserWarning, match=r"\['blue'\] are not in the policy's 6-word vocabulary"):
        ids, _ = encoder.token_ids(["put the cube in the blue bin"])
    assert ids[0, 5].item() == 1  # the unknown token
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder(["the blue bin"])  # reported already


def test_vocabulary_encoder_refuses_bad_settings_and_long_instructions():
    with pytest.raises(ValueError, match="needs a vocabulary"):
        VocabularyTextEncoder(None)
    with pytest.raises(ValueError, match="not divisible"):
        VocabularyTextEncoder(["a"], dim=10, n_heads=4)
    with pytest.raises(ValueError, match="at most max_length=3"):
        VocabularyTextEncoder(["a"], dim=8, n_heads=2, max_length=3)(["a a a a"])


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised 1-layer CLIP text model and a character-level CLIPTokenizer, saved offline."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("clip")
    vocab: dict[str, int] = {}
    for char in sorted(set("abcdefghijklmnopqrstuvwxyz")):
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"))
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=40,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(0)
    path = root / "model"
    transformers.CLIPTextModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_clip_encoder_is_frozen_and_encodes(tiny_clip):
    encoder = CLIPTextEncoder(str(tiny_clip), max_length=40)
    out = encoder([LEFT, "bin"])
    assert out.tokens.shape[:2] == out.mask.shape and out.tokens.shape[2] == 16 and out.pooled.shape == (2, 16)
    assert out.mask[1].sum() < out.mask[0].sum()
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training
    with pytest.raises(ValueError, match="text_encoder.path="):
        CLIPTextEncoder(None)


def test_clip_conditioned_policy_trains_guides_and_reloads(tiny_clip, tmp_path):
    from policy.checkpoint import config_to_yaml, save_checkpoint

    meta = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
    policy_cfg = {
        "horizon": 8,
        "n_obs_steps": 2,
        "n_action_steps": 4,
        "encoder": {"_target_": "policy.obs_encoder.ObsEncoder", "backbone": "small"},
        "denoiser": {"_target_": "policy.transformer.DiffusionTransformer", "d_model": 16, "n_layers": 1, "n_heads": 2},
        "instruction": {
            "text_encoder": {
                "_target_": "policy.text_encoder.CLIPTextEncoder",
                "path": str(tiny_clip),
                "max_length": 40,
            },
            "p_uncond": 0.5,
        },
    }
    objective, sampler = (
        {"_target_": "policy.objectives.DDPM"},
        {"_target_": "policy.samplers.DDIMSampler", "num_steps": 2},
    )
    policy = ChunkPolicy.from_config(policy_cfg, objective, sampler, meta)
    data = {"state": torch.randn(20, 3), "action": torch.randn(20, 2)}
    policy.set_normalizer(Normalizer.fit(data, policy.normalizer_modes()))
    batch = {"state": torch.randn(4, 2, 3), "action": torch.randn(4, 8, 2), "instruction": [LEFT, RIGHT] * 2}
    policy.compute_loss(batch).backward()
    assert policy.denoiser.text_in.weight.grad is not None  # the transformer attends to CLIP's tokens
    assert all(p.grad is None for p in policy.instruction.text_encoder.parameters())
    policy.eval()
    out = policy.predict_action({"state": batch["state"]}, instruction=LEFT, guidance_scale=2.0)
    assert out["action"].shape == (4, 4, 2)
    build = {"policy": policy_cfg, "objective": objective, "sampler": sampler, "shape_meta": meta}
    state = {"step": 1, "config": config_to_yaml({"task": {"name": "t"}}), "build": build, "model": policy.state_dict()}
    save_checkpoint(tmp_path / "clip.ckpt", state)
    loaded = ChunkPolicy.from_checkpoint(tmp_path / "clip.ckpt")
    g = [torch.Generator().manual_seed(0) for _ in range(2)]
    a = policy.predict_action({"state": batch["state"]}, instruction=RIGHT, guidance_scale=1.5, generator=g[0])
    b = loaded.predict_action({"state": batch["state"]}, instruction=RIGHT, guidance_scale=1.5, generator=g[1])
    torch.testing.assert_close(a["action_pred"], b["action_pred"])
