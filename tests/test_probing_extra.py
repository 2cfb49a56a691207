"""Project tests for chapter 2 beyond the hidden checks: LEACE against the reference
``concept-erasure`` package, clear errors on bad input, the generated datasets, and the
erasure hook inside a real (tiny, random) BERT."""

import pytest
import torch

from solutions import probing


def _data(seed=0, n=200, d=6):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.4).long()
    X = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + 5
    X = X + y[:, None] * torch.randn(d, generator=g)
    return X.double(), y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leace_matches_concept_erasure(seed):
    from concept_erasure import LeaceFitter

    X, y = _data(seed)
    fitter = LeaceFitter(X.shape[1], 1, dtype=torch.float64, shrinkage=False, constrain_cov_trace=False)
    fitter.update(X, y[:, None].double())
    theirs = fitter.eraser(X)
    ours = probing.leace_erase(X, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-9)
    # and the fitted eraser applies to new data the same way
    X_new, _ = _data(seed + 10)
    torch.testing.assert_close(probing.apply_leace(X_new, probing.leace_fit(X, y)), fitter.eraser(X_new),
                               rtol=1e-7, atol=1e-9)


def test_leace_makes_class_means_equal_and_moves_less_than_orthogonal_projection():
    X, y = _data(3, n=400)
    erased = probing.leace_erase(X, y)
    gap = erased[y == 1].mean(0) - erased[y == 0].mean(0)
    assert gap.abs().max() < 1e-9
    # the orthogonal projection along the mean difference also equalises the means, but LEACE
    # is the least-squares-optimal such edit
    centred = X - X.mean(0)
    orthogonal = probing.project_out(centred, probing.mean_difference_direction(X, y)) + X.mean(0)
    assert (orthogonal[y == 1].mean(0) - orthogonal[y == 0].mean(0)).abs().max() < 1e-9
    assert (erased - X).pow(2).sum() <= (orthogonal - X).pow(2).sum() + 1e-9


def test_float32_in_float32_out():
    X, y = _data(4)
    assert probing.leace_erase(X.float(), y).dtype == torch.float32


@pytest.mark.parametrize("function", [probing.mean_difference_direction, probing.leace_erase])
@pytest.mark.parametrize("labels, message", [
    (torch.ones(10, dtype=torch.long), "single class"),
    (torch.tensor([0, 1, 2, 1, 0, 1, 0, 1, 0, 1]), "0 or 1"),
    (torch.tensor([0.0, 1.0, 0.5, 1, 0, 1, 0, 1, 0, 1]), "0 or 1"),
    (torch.tensor([0, 1, 0, 1]), "one label per row"),
    (torch.zeros(10, 1, dtype=torch.long), "one label per row"),
])
def test_bad_labels_get_a_clear_error(function, labels, message):
    X = torch.randn(10, 3)
    with pytest.raises(ValueError, match=message):
        function(X, labels)


def test_bad_inputs_elsewhere():
    X = torch.randn(5, 3)
    with pytest.raises(ValueError, match="direction is zero"):
        probing.project_out(X, torch.zeros(3))
    with pytest.raises(ValueError, match="vector of size 3"):
        probing.project_out(X, torch.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        probing.ccs_loss(torch.rand(4), torch.rand(5))
    with pytest.raises(TypeError, match="torch tensors"):
        probing.mean_difference_direction(X.numpy(), torch.tensor([0, 1, 0, 1, 1]))
    with pytest.raises(ValueError, match="single class"):
        probing.train_logistic_probes(X[None], torch.zeros(5, dtype=torch.long), steps=1)
    with pytest.raises(ValueError, match="n must be even"):
        probing.number_comparisons(n=7)


def test_datasets_are_balanced_deduplicated_and_seeded():
    for data in (probing.number_comparisons(400, seed=1), probing.category_statements(seed=1)):
        assert len(set(data.texts)) == len(data.texts) == len(data.labels) == len(data.items)
        assert data.labels.float().mean().item() == 0.5
    again = probing.number_comparisons(400, seed=1)
    assert again.texts == probing.number_comparisons(400, seed=1).texts
    assert again.texts != probing.number_comparisons(400, seed=2).texts
    for text, label in zip(again.texts[:50], again.labels[:50]):
        a, _, _, _, b = text.rstrip(".").split()
        assert label == int(int(a) > int(b))


def test_splits_are_disjoint_and_by_item():
    data = probing.category_statements()
    train, test = probing.split_by_item(data.items, 0.3)
    assert not {data.items[i] for i in train.tolist()} & {data.items[i] for i in test.tolist()}
    assert len(train) + len(test) == len(data)
    train, test = probing.split_indices(100, 0.25)
    assert len(test) == 25 and not set(train.tolist()) & set(test.tolist())


def test_control_labels_are_a_function_of_the_item():
    items = ["a", "b", "a", "c", "b", "a"]
    labels = probing.control_labels(items, seed=3)
    assert labels[0] == labels[2] == labels[5] and labels[1] == labels[4]


def test_probes_find_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(300, generator=g) < 0.5).long()
    X = torch.randn(300, 10, generator=g)
    X[:, 3] += 3 * (2 * y - 1)
    tr, te = torch.arange(200), torch.arange(200, 300)
    assert probing.logistic_accuracy(X[tr], y[tr], X[te], y[te]) > 0.95
    direction = probing.mean_difference_direction(X[tr], y[tr])
    assert probing.direction_accuracy(X[tr], y[tr], X[te], y[te], direction[None]).item() > 0.95
    assert probing.logistic_accuracy(probing.project_out(X[tr], direction), y[tr],
                                     probing.project_out(X[te], direction), y[te]) < 0.7


def test_ccs_finds_a_planted_truth_direction():
    g = torch.Generator().manual_seed(1)
    truth = (torch.rand(200, generator=g) < 0.5).float()
    base = torch.randn(200, 8, generator=g)
    X_pos, X_neg = base.clone(), base.clone()
    X_pos[:, 0] += 4 * (2 * truth - 1)  # "x is true" looks true exactly when it is
    X_neg[:, 0] -= 4 * (2 * truth - 1)
    X_pos, X_neg = probing.normalise_contrast(X_pos, X_neg)
    w, b, losses = probing.train_ccs(X_pos, X_neg, n_restarts=4, steps=300)
    assert losses.shape == (4,)
    assert probing.ccs_accuracy(X_pos, X_neg, truth, w, b)[1] > 0.95


def test_erasure_hook_inside_a_tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel

    from utils.activations import transformer_blocks

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    ids = torch.randint(0, 50, (3, 7))
    direction = torch.randn(16)
    seen = {}
    block = transformer_blocks(model)[0]
    erase = block.register_forward_hook(probing.erase_direction_hook(direction))
    read = block.register_forward_hook(
        lambda m, i, o: seen.setdefault("hidden", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            erased_out = model(input_ids=ids).last_hidden_state
    finally:
        erase.remove()
        read.remove()
    with torch.no_grad():
        clean_out = model(input_ids=ids).last_hidden_state
    assert (seen["hidden"] @ direction).abs().max() < 1e-4
    assert not torch.allclose(erased_out, clean_out)
