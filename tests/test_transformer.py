"""Tests for policy/transformer.py: adaLN-Zero + cross-attention DiffusionTransformer."""

import pytest
import torch

from policy.transformer import DiffusionTransformer


def _model(**kw) -> DiffusionTransformer:
    torch.manual_seed(0)
    args = dict(
        action_dim=2,
        cond_dim=5,
        n_obs_steps=2,
        horizon=8,
        d_model=32,
        n_layers=2,
        n_heads=4,
        dropout=0.0,
        diffusion_step_embed_dim=16,
    )
    args.update(kw)
    model = DiffusionTransformer(**args)
    with torch.no_grad():  # leave the adaLN-Zero start so the conditioning paths are exercised
        for p in (model.modulation.weight, model.modulation.bias, model.action_out.weight):
            p.normal_(0, 0.1)
    return model


def test_zero_initialized_model_outputs_zero():
    torch.manual_seed(0)
    model = DiffusionTransformer(2, 5, 2, 8, d_model=32, n_layers=2, n_heads=4)
    out = model(torch.randn(3, 8, 2), torch.tensor([1.0, 2.0, 3.0]), torch.randn(3, 2, 5))
    assert out.shape == (3, 8, 2) and torch.equal(out, torch.zeros_like(out))


def test_shapes_batch_independence_and_bind_equivalence():
    model = _model().eval()
    x, t, cond = torch.randn(3, 8, 2), torch.tensor([3.0, 50.0, 99.0]), torch.randn(3, 2, 5)
    out = model(x, t, cond)
    assert out.shape == (3, 8, 2) and out.dtype == torch.float32
    torch.testing.assert_close(model(x[1:2], t[1:2], cond[1:2]), out[1:2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.bind(cond)(x, t), out)


def test_output_depends_on_timestep_condition_and_every_observation_step():
    model = _model().eval()
    x, t, cond = torch.randn(2, 8, 2), torch.tensor([10.0, 10.0]), torch.randn(2, 2, 5)
    base = model(x, t, cond)
    assert (model(x, t + 40, cond) - base).abs().max() > 1e-4
    for step in range(2):
        changed = cond.clone()
        changed[:, step] += 1.0
        assert (model(x, t, changed) - base).abs().max() > 1e-4


def test_gradients_reach_all_parameters():
    model = _model()
    model(torch.randn(2, 8, 2), torch.tensor([5.0, 6.0]), torch.randn(2, 2, 5)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_shapes_raise_value_error():
    model = _model()
    with pytest.raises(ValueError, match="cond of shape"):
        model(torch.randn(1, 8, 2), torch.zeros(1), torch.randn(1, 1, 5))
    with pytest.raises(ValueError, match="x of shape"):
        model(torch.randn(1, 7, 2), torch.zeros(1), torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match="n_heads"):
        DiffusionTransformer(2, 5, 2, 8, d_model=30, n_heads=4)


def test_step_conditioned_transformer_reads_the_step_and_takes_the_first_rows_of_its_batch():
    model = _model(step_conditioned=True).eval()
    x, t, cond = torch.randn(3, 8, 2), torch.tensor([10.0, 10.0, 10.0]), torch.randn(3, 2, 5)
    torch.testing.assert_close(model(x, t, cond, torch.full((3,), 50.0)), model(x, t, cond))  # zero-initialized
    with torch.no_grad():
        model.step_embedding.mlp[-1].weight.normal_()
    assert (model(x, t, cond, torch.full((3,), 50.0)) - model(x, t, cond)).abs().max() > 1e-4
    step = torch.tensor([0.0, 25.0, 50.0])
    torch.testing.assert_close(model.bind(cond)(x[:2], t[:2], step[:2]), model(x[:2], t[:2], cond[:2], step[:2]))
    with pytest.raises(ValueError, match="without a step embedding"):
        _model()(x, t, cond, step)
