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


def _half_dead_sae():
    sae = saes.SparseAutoencoder(8, 16)
    with torch.no_grad():
        sae.b_enc[:8] = -50.0  # half the latents can never fire
    return sae


def test_resampling_revives_dead_latents_only_where_asked():
    gt = saes.make_ground_truth(n_features=16, d=8, seed=0)
    x = gt.sample(4096, torch.Generator().manual_seed(9))
    run = saes.train_saes(_half_dead_sae, gt.sample, [0.05, 0.05], steps=100, batch_size=256, lr=1e-3,
                          resample_at=[40], resample_instances=[False, True], dead_window=20, progress=False)
    assert saes.evaluate(run.saes[0], x)["dead"] >= 0.5
    assert saes.evaluate(run.saes[1], x)["dead"] < 0.25
    assert not run.resampled[0].any() and run.resampled[1, :8].all()
    assert run.history["dead"][-1][0] >= 0.5


def test_resampling_resets_adam_moments_of_the_revived_latents_only():
    gt = saes.make_ground_truth(n_features=16, d=8, seed=0)
    params, _ = torch.func.stack_module_state([_half_dead_sae()])
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    for p in params.values():
        p.grad = torch.ones_like(p)
    optimizer.step()
    dead = torch.zeros(1, 16, dtype=torch.bool)
    dead[0, :8] = True
    pool = gt.sample(512, torch.Generator().manual_seed(0))[None]
    saes.resample_instances_(params, optimizer, dead, pool, torch.ones(1, 512), False, torch.Generator().manual_seed(0))
    for name, dim in (("W_enc", -1), ("W_dec", -2), ("b_enc", -1)):
        moment = optimizer.state[params[name]]["exp_avg"].movedim(dim, 0)
        assert (moment[:8] == 0).all() and (moment[8:] != 0).all(), name
    assert torch.allclose(params["W_dec"][0, :8].norm(dim=-1), torch.ones(8))


def test_resample_dead_latents_leaves_its_inputs_alone():
    W_enc, W_dec, b_enc, b_dec = torch.randn(4, 6), torch.randn(6, 4), torch.randn(6), torch.randn(4)
    before = [t.clone() for t in (W_enc, W_dec, b_enc, b_dec)]
    dead = torch.tensor([True, False, True, False, False, False])
    saes.resample_dead_latents(W_enc, W_dec, b_enc, b_dec, dead, torch.randn(50, 4), torch.rand(50), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, (W_enc, W_dec, b_enc, b_dec)))


def test_stacked_sampler_gives_each_group_its_own_batches():
    sample = saes.stacked_sampler((lambda n, g: torch.zeros(n, 3), 2), (lambda n, g: torch.ones(n, 3), 1))
    x = sample(5, torch.Generator())
    assert x.shape == (3, 5, 3) and (x[:2] == 0).all() and (x[2] == 1).all()


def test_plateau_change_is_zero_on_a_flat_curve_and_large_on_a_falling_one():
    settled = {"loss": [torch.tensor([9.0, 4.0])] + [torch.tensor([1.0, 2.0])] * 7}
    falling = {"loss": [torch.tensor([8.0 - i]) for i in range(8)]}
    assert saes.plateau_change(settled).tolist() == [0.0, 0.0]
    assert saes.plateau_change(falling).item() == pytest.approx(2 / 6.5)  # (3.5 - 1.5) / (8 - 1.5)


def test_jumprelu_sae_learns_its_thresholds_under_the_vmapped_trainer():
    gt = saes.make_ground_truth(n_features=16, d=8, seed=0)
    run = saes.train_saes(lambda: saes.JumpReLUSAE(8, 16), gt.sample, [0.001, 0.1], steps=150, batch_size=256,
                          lr=1e-2, objective=saes.l0_objective, progress=False)
    thresholds = [sae.log_threshold.exp() for sae in run.saes]
    assert not torch.allclose(thresholds[0], torch.full((16,), 0.1))
    assert thresholds[1].mean() > thresholds[0].mean(), "a larger L0 coefficient should raise the thresholds"
    assert run.history["l0"][-1][1] < run.history["l0"][-1][0]


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


def test_hierarchy_children_imply_parent_in_every_setting():
    h = saes.make_hierarchy(child_prob=[0.1, 0.02], parent_alone_prob=[0.2, 0.3], spread=[0.0, 0.5], seed=0)
    coeffs = h.sample_coefficients(20000, torch.Generator().manual_seed(0))
    assert coeffs.shape == (2, 20000, 12)
    for setting in range(2):
        c = coeffs[setting]
        child = c[:, 1:4] > 0
        assert (child.sum(1) <= 1).all()
        assert (c[child.any(1), 0] > 0).all()
        measured = child.any(1).float().sum() / (c[:, 0] > 0).float().sum()
        assert abs(measured.item() - h.cooccurrence[setting].item()) < 0.03
        assert abs(child.float().mean(0) - h.child_prob[setting]).max() < 0.01
    assert (coeffs[0, :, :4][coeffs[0, :, :4] > 0] == 1).all()  # spread 0: magnitudes exactly 1
    spread = coeffs[1, :, :4][coeffs[1, :, :4] > 0]
    assert 0.5 <= spread.min() and spread.max() < 1.5 and spread.std() > 0.2


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


def test_hooks_leave_the_model_as_it_was_and_embeddings_match_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from utils.artifacts import load_model, minilm_path

    model, tokenizer = load_model()
    texts = ["def f(x):\n    return x", "A short docstring.", "import os"]
    ours = saes.sentence_embeddings(model, tokenizer, texts)
    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, reference.cpu(), atol=1e-4, rtol=1e-4)
    unchanged = saes.sentence_embeddings(model, tokenizer, texts, edit=lambda h: h)
    torch.testing.assert_close(unchanged, ours)
    with pytest.raises(RuntimeError):
        with saes.edited_residual(model, 3, torch.zeros_like):
            raise RuntimeError("the hook must be removed even when the block fails")
    torch.testing.assert_close(saes.sentence_embeddings(model, tokenizer, texts), ours)
    zeroed = saes.sentence_embeddings(model, tokenizer, texts, edit=torch.zeros_like)
    assert (zeroed * ours).sum(-1).max() < 0.9


def test_fraction_recovered_and_random_direction():
    assert saes.fraction_recovered(0.9, 0.1) == pytest.approx(8 / 9)
    d = torch.tensor([3.0, 4.0])
    r = saes.random_direction_like(d, seed=1)
    assert r.norm().item() == pytest.approx(5.0)
    assert torch.equal(r, saes.random_direction_like(d, seed=1)) and not torch.equal(r, saes.random_direction_like(d, seed=2))


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@GPU
@pytest.mark.parametrize("make_sae, objective", [
    (lambda: saes.SparseAutoencoder(8, 16, k=3), saes.l1_objective),
    (lambda: saes.JumpReLUSAE(8, 16), saes.l0_objective)])
def test_trainer_gives_the_same_saes_on_a_gpu(make_sae, objective):
    gt = saes.make_ground_truth(n_features=16, d=8, seed=0)
    runs = [saes.train_saes(lambda: make_sae().to(device), gt.sample, [0.01, 0.1], steps=60, batch_size=256,
                            lr=1e-3, objective=objective, resample_at=[30], dead_window=10, progress=False)
            for device in ("cpu", "cuda")]
    assert torch.equal(runs[0].resampled, runs[1].resampled)
    for cpu_sae, gpu_sae in zip(*(run.saes for run in runs)):
        for name, p in cpu_sae.named_parameters():
            torch.testing.assert_close(getattr(gpu_sae, name).cpu(), p, atol=1e-3, rtol=1e-3)


@GPU
def test_resampling_draws_the_same_rows_on_a_gpu():
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(4, 6, generator=g), torch.randn(6, 4, generator=g), torch.randn(6, generator=g),
            torch.randn(4, generator=g), torch.tensor([True, False, True, False, True, False]),
            torch.randn(50, 4, generator=g), torch.rand(50, generator=g))
    cpu = saes.resample_dead_latents(*args, seed=5)
    gpu = saes.resample_dead_latents(*(a.cuda() for a in args), seed=5)
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a)
