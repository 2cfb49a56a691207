"""The reference module of chapter 3 beyond its hidden checks: clear errors on bad input,
exact values on known geometries, the interference bounds, the neuron models' analysis
functions against the models themselves, and training that is seeded, per instance, and
gives the same results on whichever device the model is (the GPU tests run only where
there is one)."""

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


def test_training_with_a_target_teaches_the_absolute_value():
    model = sp.AbsoluteValueModel(2, 8, 2, generator=torch.Generator().manual_seed(0))

    def sampler(batch_size, generator):
        return sp.generate_signed_sparse_features(batch_size, 2, 2, 1.0, generator)

    before = sp.held_out_loss(model, sampler, target=torch.abs)
    sp.train_toy_models(model, None, steps=600, batch_size=256, lr=3e-2, sampler=sampler, target=torch.abs,
                        progress=False)
    after = sp.held_out_loss(model, sampler, target=torch.abs)
    assert (after < before / 10).all()


def test_held_out_loss_is_seeded_and_leaves_the_model_alone():
    model = sp.ToyModel(3, 2, 2, generator=torch.Generator().manual_seed(0))
    W = model.W.detach().clone()

    def sampler(batch_size, generator):
        return sp.generate_sparse_features(batch_size, 2, 3, 0.5, generator)

    assert torch.equal(sp.held_out_loss(model, sampler), sp.held_out_loss(model, sampler))
    assert not torch.equal(sp.held_out_loss(model, sampler), sp.held_out_loss(model, sampler, seed=1))
    assert torch.equal(model.W.detach(), W)


# --------------------------------------------------------------------------- samplers

def test_signed_features_are_uniform_on_both_sides():
    x = sp.generate_signed_sparse_features(20_000, 2, 3, torch.tensor([[0.2], [0.7]]), torch.Generator().manual_seed(0))
    fires = x != 0
    assert torch.allclose(fires.float().mean(0), torch.tensor([[0.2] * 3, [0.7] * 3]), atol=0.02)
    values = x[fires]
    assert values.min() >= -1 and values.max() < 1
    assert abs(values.mean().item()) < 0.02 and abs((values < -0.5).float().mean().item() - 0.25) < 0.02


@pytest.mark.parametrize("sampler", [sp.generate_sparse_features, sp.generate_signed_sparse_features,
                                     sp.generate_correlated_features, sp.generate_anticorrelated_features])
def test_samplers_draw_on_the_generator_and_move_to_the_device(sampler):
    """The same seed gives the same numbers wherever the batch goes ("meta" stands in for a GPU)."""
    here = sampler(16, 2, 2, 0.3, torch.Generator().manual_seed(0))
    moved = sampler(16, 2, 2, 0.3, torch.Generator().manual_seed(0), device="meta")
    assert moved.device.type == "meta" and moved.shape == here.shape
    assert torch.equal(here, sampler(16, 2, 2, 0.3, torch.Generator().manual_seed(0), device="cpu"))


# --------------------------------------------------------------------------- neurons

def test_neuron_model_is_a_toy_model_with_relu_neurons():
    model = sp.NeuronModel(4, 3, 2, generator=torch.Generator().manual_seed(0))
    x = torch.rand(8, 2, 4)
    h = model.hidden(x)
    assert (h >= 0).all() and torch.allclose(h, sp.ToyModel.hidden(model, x).clamp(min=0))
    expected = torch.relu(torch.einsum("ihf,bih->bif", model.W, h) + model.b_final)
    assert torch.allclose(model(x), expected)


def test_selectivity_of_known_neurons():
    W = torch.tensor([[[1.0, -5.0, 0.0], [1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]]])
    assert sp.neuron_selectivity(W).tolist() == [[1.0, 0.5, 0.0]]


def test_slopes_predict_the_model_on_single_features():
    """With a large bias no output ReLU is active, so output i = b_i + t·S[σ, i, j] exactly."""
    model = sp.AbsoluteValueModel(5, 3, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.b_final.fill_(100.0)
    S = sp.single_feature_slopes(model.W_in.detach(), model.W_out.detach())
    for side, sign in enumerate((1.0, -1.0)):
        for j in range(5):
            x = torch.zeros(1, 2, 5)
            x[0, :, j] = 0.7 * sign
            torch.testing.assert_close(model(x).detach()[0] - 100.0, 0.7 * S[:, side, :, j], atol=1e-4, rtol=0)


def test_neuron_contributions_add_up_to_the_diagonal_slopes():
    g = torch.Generator().manual_seed(0)
    W_in, W_out = torch.randn(3, 4, 6, generator=g), torch.randn(3, 6, 4, generator=g)
    total = sp.neuron_contributions(W_in, W_out).sum(dim=2)
    torch.testing.assert_close(total, torch.diagonal(sp.single_feature_slopes(W_in, W_out), dim1=-2, dim2=-1))


# --------------------------------------------------------------------------- the GPU

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


@requires_gpu
def test_a_seed_gives_the_same_batch_on_the_gpu():
    cpu = sp.generate_sparse_features(64, 3, 5, torch.tensor([[0.9], [0.1], [0.5]]), torch.Generator().manual_seed(0))
    gpu = sp.generate_sparse_features(64, 3, 5, torch.tensor([[0.9], [0.1], [0.5]], device="cuda"),
                                      torch.Generator().manual_seed(0), device="cuda")
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)


@requires_gpu
def test_training_on_the_gpu_matches_the_cpu():
    def train(device):
        model = sp.ToyModel(5, 2, 3, generator=torch.Generator().manual_seed(0)).to(device)
        importance = (0.9 ** torch.arange(5.0)).to(device)  # a CUDA importance meets per_feature
        sp.train_toy_models(model, torch.tensor([[1.0], [0.1], [0.01]]), importance, steps=200, lr=1e-2,
                            progress=False)
        return model.W.detach().cpu()

    assert torch.allclose(train("cuda"), train("cpu"), atol=1e-2)  # the same batches; only rounding differs
