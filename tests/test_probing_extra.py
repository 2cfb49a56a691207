"""Project tests for chapter 2 beyond the hidden checks: LEACE against the reference
``concept-erasure`` package, clear errors on bad input, the generated datasets, batched
probes, and the in-model machinery (erasure, patching, steering) inside a real (tiny, random)
BERT with its own tokenizer."""

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
    with pytest.raises(ValueError, match="n must be a multiple of 2"):
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
    truth = (torch.rand(200, generator=g) < 0.5).long()
    base = torch.randn(200, 8, generator=g)
    X_pos, X_neg = base.clone(), base.clone()
    X_pos[:, 0] += 4 * (2 * truth - 1)  # "x is true" looks true exactly when it is
    X_neg[:, 0] -= 4 * (2 * truth - 1)
    X_pos, X_neg = probing.normalise_contrast(X_pos, X_neg)
    w, b, losses = probing.train_ccs(X_pos, X_neg, n_restarts=4, steps=300)
    assert w.shape == (4, 8) and b.shape == losses.shape == (4,)
    accuracy = probing.ccs_accuracy(X_pos, X_neg, truth, w, b)[losses.argmin()].item()
    assert max(accuracy, 1 - accuracy) > 0.95


def test_ccs_trains_every_instance_at_once():
    """A leading dimension of instances (layers) trains as if each were alone."""
    g = torch.Generator().manual_seed(2)
    X_pos, X_neg = torch.randn(3, 50, 6, generator=g), torch.randn(3, 50, 6, generator=g)
    w, b, losses = probing.train_ccs(X_pos, X_neg, n_restarts=2, steps=20)
    assert w.shape == (3, 2, 6) and b.shape == losses.shape == (3, 2)
    # the same starts for instance 0 alone: draw them the way train_ccs does
    start = torch.randn(3, 2, 6, generator=torch.Generator().manual_seed(0)) / 6 ** 0.5
    alone = probing.ccs_loss(*probing.ccs_probabilities(X_pos[0], X_neg[0], start[0], torch.zeros(2)))
    together = probing.ccs_loss(*probing.ccs_probabilities(X_pos, X_neg, start, torch.zeros(3, 2)))
    torch.testing.assert_close(alone, together[0])


def test_batched_probes_match_one_at_a_time():
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(80, generator=g) < 0.5).long()
    X = torch.randn(2, 80, 5, generator=g) + y[:, None] * torch.randn(5, generator=g)
    probe = probing.fit_logistic(X[:, :60], y[:60], steps=50)
    alone = probing.fit_logistic(X[1:, :60], y[:60], steps=50)
    torch.testing.assert_close(probe.logits(X[:, 60:])[1], alone.logits(X[1:, 60:])[0], rtol=1e-4, atol=1e-5)
    # the probe's direction in raw space: logits are x · direction + a constant
    raw = X[1, 60:] @ probe.direction(1)
    torch.testing.assert_close(probe.logits(X[:, 60:])[1] - raw, (probe.logits(X[:, 60:])[1] - raw)[:1].expand(20))
    assert probing.mlp_accuracy(X[:, :60], y[:60], X[:, 60:], y[60:], steps=20).shape == (2,)


def test_an_mlp_probe_finds_xor_and_a_linear_one_does_not():
    g = torch.Generator().manual_seed(4)
    signs = torch.randint(0, 2, (600, 2), generator=g)
    X = (2 * signs - 1).float() + 0.2 * torch.randn(600, 2, generator=g)
    y = signs[:, 0] ^ signs[:, 1]
    assert probing.mlp_accuracy(X[:400], y[:400], X[400:], y[400:]) > 0.9
    assert probing.logistic_accuracy(X[:400], y[:400], X[400:], y[400:]) < 0.7


def test_normalised_effect_needs_something_to_restore():
    with pytest.raises(ValueError, match="nothing to restore"):
        probing.normalised_effect(torch.rand(3, 4), torch.ones(4), torch.ones(4))


def test_token_from_end_picks_each_texts_own_token():
    from utils.activations import TokenActivations

    acts = torch.arange(7.0)[:, None, None].expand(7, 1, 2)  # token i holds the value i
    tokens = TokenActivations(acts, torch.tensor([0, 0, 0, 1, 1, 1, 1]), torch.tensor([0, 1, 2, 0, 1, 2, 3]),
                              torch.zeros(7, dtype=torch.long), (0,))
    assert probing.token_from_end(tokens, 0)[:, 0, 0].tolist() == [2.0, 6.0]
    assert probing.token_from_end(tokens, 2)[:, 0, 0].tolist() == [0.0, 4.0]
    with pytest.raises(ValueError, match="fewer than 4 tokens"):
        probing.token_from_end(tokens, 3)


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


@pytest.fixture(scope="module")
def tiny_bert():
    """A tiny random BERT and a WordPiece tokenizer for "a is larger than b." statements."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "is", "larger", "than", "."] + [str(i) for i in range(1, 10)]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(words)})
    assert tokenizer.unk_token_id not in tokenizer("7 is larger than 2.")["input_ids"]
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    return BertModel(config).eval(), tokenizer


def _linear_readout(pooled):
    return pooled @ torch.linspace(-1, 1, pooled.shape[-1])


def test_patching_machinery_inside_a_tiny_bert(tiny_bert):
    model, tokenizer = tiny_bert
    source = ["7 is larger than 2.", "5 is larger than 1."]
    target = ["7 is larger than 8.", "5 is larger than 9."]
    layers = [0, 1, 2, 3]
    patched = probing.patched_readouts(source, target, _linear_readout, layers, 3, model, tokenizer)
    seq = len(tokenizer(source[0])["input_ids"])
    assert patched.shape == (len(layers), seq, 2)
    clean = probing.readouts(source, _linear_readout, 3, model, tokenizer)
    corrupted = probing.readouts(target, _linear_readout, 3, model, tokenizer)
    differs = 5  # [CLS] a is larger than b . [SEP]
    # at the embeddings, only the differing token matters, and patching it restores the source run
    torch.testing.assert_close(patched[0, differs], clean, rtol=1e-4, atol=1e-5)
    same = [t for t in range(seq) if t != differs]
    torch.testing.assert_close(patched[0, same], corrupted.expand(len(same), 2), rtol=1e-4, atol=1e-5)
    # at the read-out layer the read-out is linear in the mean over positions: patches add up
    torch.testing.assert_close((patched[-1] - corrupted).sum(0), clean - corrupted, rtol=1e-4, atol=1e-5)
    effect = probing.normalised_effect(patched, clean, corrupted)
    assert effect.shape == (len(layers), seq) and effect[0, differs].item() == pytest.approx(1, abs=1e-4)
    only = probing.patched_readouts(source, target, _linear_readout, layers, 3, model, tokenizer, positions=[differs])
    torch.testing.assert_close(only[:, 0], patched[:, differs])
    with pytest.raises(ValueError, match="same number of tokens"):
        probing.patched_readouts(["7 is larger than 2 ."], ["7 is larger than 2"], _linear_readout, layers, 3,
                                 model, tokenizer)


def test_steering_machinery_inside_a_tiny_bert(tiny_bert):
    model, tokenizer = tiny_bert
    texts = ["7 is larger than 2.", "3 is larger than 9."]
    plain = probing.readouts(texts, _linear_readout, 3, model, tokenizer)
    direction = torch.randn(16, generator=torch.Generator().manual_seed(1))
    vectors = torch.stack([torch.zeros(2, 16), direction.expand(2, 16), 2 * direction.expand(2, 16)])
    steered = probing.steered_readouts(texts, vectors, 3, _linear_readout, 3, model, tokenizer, batch_size=4)
    assert steered.shape == (3, 2)
    torch.testing.assert_close(steered[0], plain)
    # added after the last block, a vector moves a linear read-out by exactly its own read-out
    shift = _linear_readout(direction[None])[0]
    torch.testing.assert_close(steered[1] - plain, shift.expand(2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(steered[2] - plain, 2 * shift.expand(2), rtol=1e-4, atol=1e-4)


def test_residual_hook_at_the_embeddings_edits_the_input_of_block_0(tiny_bert):
    model, tokenizer = tiny_bert
    batch = tokenizer(["7 is larger than 2."], return_tensors="pt")
    before = probing.pooled_states(batch, 1, model)
    after = probing.pooled_states(batch, 1, model, [(0, lambda module, inputs, hidden: hidden * 0)])
    zeros = probing.pooled_states(batch, 0, model, [(0, lambda module, inputs, hidden: hidden * 0)])
    assert zeros.abs().max() == 0 and not torch.allclose(before, after)
    with pytest.raises(ValueError, match="between 0"):
        probing.residual_hook(model, 4, lambda *args: None)


def test_mixed_templates_are_balanced_and_correct():
    data = probing.number_comparisons(400, seed=3, relations=("larger", "smaller"))
    assert len(set(data.texts)) == len(data.texts) == 400
    for relation in ("larger", "smaller"):
        rows = [i for i, text in enumerate(data.texts) if relation in text]
        assert len(rows) == 200 and data.labels[rows].float().mean().item() == 0.5
    for text, label in zip(data.texts, data.labels.tolist()):
        a, _, relation, _, b = text.rstrip(".").split()
        assert label == int((int(a) > int(b)) == (relation == "larger"))
    with pytest.raises(ValueError, match="relations"):
        probing.number_comparisons(8, relations=("equal",))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the in-model machinery on CUDA")
def test_patching_and_steering_give_the_same_read_outs_on_a_gpu(tiny_bert):
    model, tokenizer = tiny_bert
    source, target = ["7 is larger than 2."], ["7 is larger than 8."]
    direction = torch.randn(1, 1, 16, generator=torch.Generator().manual_seed(2))
    results = []
    for device in ("cpu", "cuda"):
        model.to(device)
        results.append((probing.patched_readouts(source, target, _linear_readout, [0, 2], 3, model, tokenizer),
                        probing.steered_readouts(target, direction, 1, _linear_readout, 3, model, tokenizer)))
    model.to("cpu")
    for on_cpu, on_gpu in zip(*results):
        torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-4)
