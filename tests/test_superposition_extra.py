"""The reference module of chapter 3 beyond its hidden checks: clear errors on bad input,
exact values on known geometries, the interference bounds, and training that is seeded,
per instance, and on whichever device the model is."""

import math

import pytest
import torch

from solutions import superposition as sp


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("p", [1.5, -0.1, float("nan"), torch.tensor([[0.5], [1.2]])])
def test_probability_outside_unit_interval_is_refused(p):
    with pytest.raises(ValueError, match=r"feature_probability must lie in \[0, 1\]"):
        sp.generate_sparse_features(4, 2, 3, p)


def test_probability_of_the_wrong_shape_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"does not broadcast to \[n_instances, n_features\] = \[2, 3\]"):
        sp.generate_sparse_features(4, 2, 3, torch.full((3, 1), 0.5))


def test_anticorrelated_probability_above_half_is_refused():
    with pytest.raises(ValueError, match=r"must lie in \[0, 0.5\]"):
        sp.generate_anticorrelated_features(4, 1, 2, 0.6)


def test_model_refuses_a_batch_with_the_wrong_number_of_instances():
    model = sp.ToyModel(5, 2, n_instances=3)
    with pytest.raises(ValueError, match=r"expected a batch \[batch, n_instances, n_features\] = \[batch, 3, 5\]"):
        model(torch.rand(8, 4, 5))
    with pytest.raises(ValueError, match="got shape"):
        model(torch.rand(8, 5))


def test_training_refuses_probabilities_for_another_number_of_instances():
    model = sp.ToyModel(5, 2, n_instances=3)
    with pytest.raises(ValueError, match="does not broadcast"):
        sp.train_toy_models(model, torch.full((4, 1), 0.1), steps=1, progress=False)


def test_loss_refuses_mismatched_shapes_and_negative_importance():
    x = torch.rand(4, 2, 3)
    with pytest.raises(ValueError, match="x and x_hat must both be"):
        sp.importance_weighted_loss(x, x[:, :1], 1.0)
    with pytest.raises(ValueError, match=r"importance must lie in \[0, inf\)"):
        sp.importance_weighted_loss(x, x, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="importance has shape"):
        sp.importance_weighted_loss(x, x, torch.ones(4))


# --------------------------------------------------------------------------- exact values

def test_sampler_edge_probabilities_are_exact():
    x = sp.generate_sparse_features(1000, 2, 2, torch.tensor([[0.0, 1.0]]), torch.Generator().manual_seed(0))
    assert (x[..., 0] == 0).all()
    assert (x[..., 1] > 0).float().mean() > 0.999


def test_known_geometries():
    pentagon = torch.stack([torch.cos(2 * math.pi * torch.arange(5) / 5), torch.sin(2 * math.pi * torch.arange(5) / 5)])
    W = torch.stack([pentagon, torch.cat([torch.eye(2), torch.zeros(2, 3)], dim=1)])
    torch.testing.assert_close(sp.feature_dimensionality(W)[0], torch.full((5,), 0.4))
    torch.testing.assert_close(sp.feature_dimensionality(W)[1], torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(sp.dimensions_per_feature(W), torch.tensor([0.4, 1.0]))
    # a regular pentagon is also the best packing of 5 lines in the plane: max |cos| = cos 36°
    assert sp.max_abs_cosine(pentagon.T).item() == pytest.approx(math.cos(math.pi / 5), abs=1e-6)


def test_phases_of_a_hand_made_model():
    W = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]]])  # [3 instances, 1 dim, 2 features]
    assert sp.classify_phase(W).tolist() == [0, 1, 2]


# --------------------------------------------------------------------------- interference bounds

@pytest.mark.parametrize("n, d", [(2, 2), (3, 3), (7, 6), (10, 4), (30, 6)])
def test_optimised_packing_lies_between_welch_and_random(n, d):
    V = sp.optimise_packing(n, d, steps=300, n_tries=2)
    assert torch.allclose(V.norm(dim=-1), torch.ones(n), atol=1e-5)
    interference = sp.max_abs_cosine(V).item()
    assert interference >= sp.welch_bound(n, d) - 1e-4
    if n <= d:
        assert interference < 1e-3  # orthogonal directions fit: no interference at all
    random = sp.max_abs_cosine(torch.randn(20, n, d, generator=torch.Generator().manual_seed(0))).median()
    assert interference < random


def test_simplex_meets_the_welch_bound():
    assert sp.max_abs_cosine(sp.optimise_packing(5, 4, steps=500)).item() == pytest.approx(1 / 4, abs=0.01)


def test_jl_estimate_is_positive_where_the_optimum_is_zero():
    for d in (4, 16, 64):
        assert sp.welch_bound(d, d) == 0
        assert sp.jl_interference_bound(d, d) > 0.5
    assert sp.jl_interference_bound(1, 10) == 0


# --------------------------------------------------------------------------- training

def test_training_is_seeded_and_instances_are_independent():
    def train(seed, n_instances, p):
        model = sp.ToyModel(5, 2, n_instances, generator=torch.Generator().manual_seed(0))
        return sp.train_toy_models(model, p, steps=30, batch_size=64, seed=seed, progress=False).W.detach()

    p = torch.tensor([[0.1], [0.5]])
    assert torch.equal(train(0, 2, p), train(0, 2, p))
    assert not torch.equal(train(0, 2, p), train(1, 2, p))


def test_dense_5_to_2_model_learns_the_two_most_important_features():
    model = sp.ToyModel(5, 2, 2, generator=torch.Generator().manual_seed(0))
    sp.train_toy_models(model, 1.0, 0.5 ** torch.arange(5.0), steps=1_500, batch_size=512, lr=1e-2, progress=False)
    norms = model.W.detach().norm(dim=1)
    assert (norms[:, :2] > 0.9).all() and (norms[:, 2:] < 0.5).all()  # "represented" as in the notebook


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_training_on_the_gpu():
    model = sp.ToyModel(5, 2, 3).cuda()
    sp.train_toy_models(model, torch.tensor([[1.0], [0.1], [0.01]]), 0.9 ** torch.arange(5.0), steps=5,
                        progress=False)
    assert model.W.is_cuda
