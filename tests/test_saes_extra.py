"""The project's own tests of chapter 4's reference module: the trainer, the data, the
dashboard, and clear errors on bad input."""

import pytest
import torch

from solutions import saes


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="k must be between 1 and d_sae"):
        saes.SparseAutoencoder(8, 16, k=17)
    with pytest.raises(ValueError, match="k must be between 1 and d_sae"):
        saes.SparseAutoencoder(8, 16, k=0)
    sae = saes.SparseAutoencoder(8, 16)
    with pytest.raises(ValueError, match="d_in=8"):
        sae(torch.randn(4, 9))
    with pytest.raises(ValueError, match="d_sae=16"):
        sae.decode(torch.randn(4, 8))
    with pytest.raises(ValueError, match="no row has an active child"):
        saes.absorption_rate(torch.rand(5, 3), 0, torch.zeros(5, dtype=torch.bool))


def test_encode_accepts_extra_leading_dimensions():
    sae = saes.SparseAutoencoder(4, 6, k=2)
    x = torch.randn(3, 5, 4)
    x_hat, z = sae(x)
    assert x_hat.shape == x.shape and z.shape == (3, 5, 6)
    assert ((z > 0).sum(-1) <= 2).all()


def _one_step_by_hand(sae, x, l1, lr):
    """One Adam step on a single SAE, then decoder renormalisation, without vmap."""
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    x_hat, z = sae(x)
    saes.sae_loss(x, x_hat, z, l1).backward()
    optimizer.step()
    with torch.no_grad():
        W = sae.W_enc if sae.tied else sae.W_dec
        dim = 0 if sae.tied else 1
        W.div_(W.norm(dim=dim, keepdim=True))
    return sae


@pytest.mark.parametrize("tied, k", [(False, None), (True, None), (False, 3)])
def test_vmapped_trainer_matches_training_each_sae_alone(tied, k):
    gt = saes.make_ground_truth(n_features=12, d=6, seed=1)
    l1s = [0.0, 0.1, 1.0]
    trained = saes.train_saes(lambda: saes.SparseAutoencoder(6, 10, tied=tied, k=k), gt.sample, l1s,
                              steps=1, batch_size=32, lr=1e-2, seed=3, progress=False)
    # the same initial SAEs and batch, trained one at a time
    torch.manual_seed(3)
    initial = [saes.SparseAutoencoder(6, 10, tied=tied, k=k) for _ in l1s]
    x = gt.sample(32, torch.Generator().manual_seed(3))
    for sae, l1, result in zip(initial, l1s, trained.saes):
        with torch.no_grad():  # the trainer starts from unit decoder rows
            W = sae.W_enc if tied else sae.W_dec
            W.div_(W.norm(dim=0 if tied else 1, keepdim=True))
        expected = _one_step_by_hand(sae, x, l1, 1e-2)
        for name, p in expected.named_parameters():
            torch.testing.assert_close(getattr(result, name), p, atol=1e-5, rtol=1e-4)


def test_decoder_rows_stay_unit_norm_and_l1_sweep_orders_sparsity():
    gt = saes.make_ground_truth(n_features=16, d=8, seed=0)
    trained = saes.train_saes(lambda: saes.SparseAutoencoder(8, 16), gt.sample, [0.01, 1.0],
                              steps=200, batch_size=256, lr=1e-2, progress=False)
    for sae in trained.saes:
        norms = sae.decoder_directions().norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    l0 = trained.history["l0"][-1]
    assert l0[1] < l0[0], "a larger L1 coefficient should give a sparser code"


def test_resampling_revives_dead_latents():
    gt = saes.make_ground_truth(n_features=16, d=8, seed=0)

    def dead_sae():
        sae = saes.SparseAutoencoder(8, 16)
        with torch.no_grad():
            sae.b_enc[:8] = -50.0  # half the latents can never fire
        return sae

    kwargs = dict(steps=100, batch_size=256, lr=1e-3, progress=False)
    x = gt.sample(4096, torch.Generator().manual_seed(9))
    without = saes.train_saes(dead_sae, gt.sample, [0.05], **kwargs).saes[0]
    with_resampling = saes.train_saes(dead_sae, gt.sample, [0.05], resample_every=20, **kwargs).saes[0]
    assert saes.evaluate(without, x)["dead"] >= 0.5
    assert saes.evaluate(with_resampling, x)["dead"] < 0.25


def test_ground_truth_sampling():
    g = torch.Generator().manual_seed(0)
    gt = saes.make_ground_truth(n_features=20, d=10, max_prob=0.2, min_prob=0.02, seed=0)
    coeffs = gt.sample_coefficients(20000, g)
    torch.testing.assert_close((coeffs > 0).float().mean(0), gt.probs, atol=0.01, rtol=0.1)
    correlated = saes.make_ground_truth(n_features=20, d=10, max_prob=0.2, min_prob=0.02, correlated=True, seed=0)
    coeffs = correlated.sample_coefficients(20000, g)
    torch.testing.assert_close((coeffs > 0).float().mean(0), gt.probs, atol=0.01, rtol=0.1)
    active = (coeffs > 0).float()
    assert torch.corrcoef(active.T).fill_diagonal_(0).abs().max() > 0.1


def test_hierarchy_children_imply_parent():
    h = saes.make_hierarchy(n_children=3, child_prob=0.1, parent_alone_prob=0.2, seed=0)
    coeffs = h.sample_coefficients(20000, torch.Generator().manual_seed(0))
    child = coeffs[:, 1:4] > 0
    assert (child.sum(1) <= 1).all()
    assert (coeffs[child.any(1), 0] == 1).all()
    measured = child.any(1).float().sum() / (coeffs[:, 0] > 0).float().sum()
    assert abs(measured.item() - h.cooccurrence) < 0.03


def test_matched_cosine_is_one_to_one():
    true = torch.eye(3)
    learned = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert saes.mean_max_cosine_similarity(learned, true).item() == pytest.approx(2 / 3)
    assert saes.matched_cosine_similarity(learned, true).item() == pytest.approx(2 / 3)
    # one learned direction is the best match of two true ones; one-to-one, it counts once
    learned = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert saes.matched_cosine_similarity(learned, true).item() < saes.mean_max_cosine_similarity(learned, true).item()


def test_stdlib_texts_are_deterministic_and_real():
    first = saes.stdlib_texts(n_texts=20)
    assert first == saes.stdlib_texts(n_texts=20)
    assert len(first) == 20 and all(len(t) >= 400 for t in first)
    assert any("def " in t for t in first)


def test_dashboard_escapes_tokens_and_stays_within_a_text():
    z = torch.zeros(6, 2)
    z[1, 0], z[4, 0] = 3.0, 1.0
    text_index = torch.tensor([0, 0, 0, 1, 1, 1])
    contexts = saes.top_contexts(z[:, 0], text_index, n=5, window=4)
    assert [row for row, _ in contexts] == [1, 4]
    assert list(contexts[0][1]) == [0, 1, 2] and list(contexts[1][1]) == [3, 4, 5]
    page = saes.latent_dashboard(0, z, ["<a>", "b", "##c", "d", "e", "f"], text_index)
    assert "&lt;a&gt;" in page and "<a>" not in page
    assert "33.33%" in page
