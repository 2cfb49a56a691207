"""Chapter 1's project tests: agreement with gensim, the loaders, and bad input."""

import random

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from gensim.test.utils import datapath

from solutions.embedding_arithmetic import (best_answers, evaluate_analogies, input_variants,
                                            input_wins, nearest_neighbours, normalize_rows,
                                            read_analogy_questions, seed_experiment)
from utils.artifacts import (UnknownWordError, Vocabulary, load_glove, load_token_embeddings,
                             load_word_vectors, whole_word_tokens)


def _gensim(E, words, path, **kwargs):
    keyed = KeyedVectors(E.shape[1])
    keyed.add_vectors(words, E.numpy())
    _, sections = keyed.evaluate_word_analogies(path, **kwargs)
    counts = {s["section"]: (len(s["correct"]), len(s["correct"]) + len(s["incorrect"]))
              for s in sections[:-1]}
    return counts, {q for s in sections[:-1] for q in s["correct"]}


def _ours(E, words, path, **kwargs):
    result = evaluate_analogies(E, words, path, **kwargs)
    upper = str.upper if kwargs.get("case_insensitive", True) else str
    correct = {tuple(upper(words[i]) for i in q) for q, hit in
               zip(result.questions.tolist(), result.is_correct.tolist()) if hit}
    return result.sections, correct


@pytest.fixture(scope="module")
def glove():
    return load_glove()


@pytest.fixture(scope="module")
def question_subset(tmp_path_factory):
    """Every section of the real test set, the first 40 questions of each (CI-sized)."""
    lines = []
    for section in read_analogy_questions(datapath("questions-words.txt")):
        lines.append(f": {section.name}")
        lines += [" ".join(q) for q in section.questions[:40]]
    path = tmp_path_factory.mktemp("questions") / "subset.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_matches_gensim_on_glove_question_for_question(glove, question_subset):
    E, vocab = glove
    path = question_subset
    ours = _ours(E, vocab.words, path)
    theirs = _gensim(E, vocab.words, path, restrict_vocab=300_000, case_insensitive=True)
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    assert sum(c for c, _ in ours[0].values()) > 100  # not a vacuous agreement


def test_matches_gensim_with_case_variants_and_restriction(tmp_path):
    """A cased vocabulary where variants and the restriction matter, against gensim."""
    rng = random.Random(0)
    base = [f"w{i}" for i in range(150)]
    words = base + [w.upper() for w in base[:40]] + [w.capitalize() for w in base[20:60]] + \
        [f"late{i}" for i in range(30)]
    generator = torch.Generator().manual_seed(0)
    E = torch.randn(len(words), 8, generator=generator)
    lines = [": one"] + [" ".join(rng.choice(words) for _ in range(4)) for _ in range(150)]
    lines += [": two"] + [" ".join(rng.choice(base[:60]) for _ in range(4)) for _ in range(150)]
    path = tmp_path / "q.txt"
    path.write_text("\n".join(lines) + "\n")
    for case_insensitive in (True, False):
        for restrict in (200, len(words)):
            ours = _ours(E, words, path, restrict_vocab=restrict, case_insensitive=case_insensitive)
            theirs = _gensim(E, words, path, restrict_vocab=restrict, case_insensitive=case_insensitive)
            assert ours == theirs, (case_insensitive, restrict)


@pytest.mark.parametrize("method", ["3cosadd", "3cosmul"])
def test_input_wins_agrees_with_a_pass_without_exclusion(glove, question_subset, method):
    """Four scores per question decide what a second pass over the vocabulary would."""
    E, vocab = glove
    E, words = E[:50_000], vocab.words[:50_000]
    excluded = evaluate_analogies(E, words, question_subset, method=method)
    kept = evaluate_analogies(E, words, question_subset, method=method, exclude_inputs=False)
    assert torch.equal(excluded.questions, kept.questions)
    wins = input_wins(E, excluded, method)
    assert torch.equal(wins, (kept.predicted[:, None] == kept.questions[:, :3]).any(dim=1))
    assert torch.equal(excluded.is_correct & ~wins, kept.is_correct)
    assert 0 < wins.sum() < len(wins)  # neither answer is trivial


@pytest.mark.parametrize("exclude_inputs", [True, False])
def test_only_c_shortcut_agrees_with_the_whole_score_matrix(exclude_inputs):
    """The 4 nearest rows of each c decide only-c, across tiles, with repeated inputs too."""
    g = torch.Generator().manual_seed(0)
    En = normalize_rows(torch.randn(3000, 16, generator=g))
    questions = torch.randint(0, 3000, (2000, 3), generator=g)
    questions[:50, 2] = questions[:50, 0]
    scores = En[questions[:, 2]] @ En.T
    if exclude_inputs:
        scores[torch.arange(len(questions))[:, None].expand(-1, 3), questions] = -torch.inf
    found = best_answers(En, questions, "only_c", exclude_inputs, tile_size=700)
    assert torch.equal(found, scores.argmax(dim=1))


def test_malformed_questions_file_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(": capitals\nathens greece baghdad iraq\nparis france berlin\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 3: expected 4 words"):
        read_analogy_questions(path)
    path.write_text("athens greece baghdad iraq\n")
    with pytest.raises(ValueError, match=r"line 1: a question before the first"):
        read_analogy_questions(path)
    with pytest.raises(FileNotFoundError, match="questions-words.txt"):
        read_analogy_questions(tmp_path / "missing.txt")


def test_evaluate_refuses_mismatched_words_and_unknown_methods(tmp_path):
    E = torch.randn(5, 3)
    with pytest.raises(ValueError, match="got 4 words for 5 embedding rows"):
        evaluate_analogies(E, list("abcd"), datapath("questions-words.txt"))
    with pytest.raises(ValueError, match="unknown method '3cosdiv'"):
        evaluate_analogies(E, list("abcde"), datapath("questions-words.txt"), method="3cosdiv")


def test_unknown_word_error_names_the_word_and_close_matches(glove):
    _, vocab = glove
    with pytest.raises(UnknownWordError) as error:
        vocab["kingxq"]
    assert "'kingxq' is not in the vocabulary" in str(error.value)
    assert "king" in str(error.value)
    with pytest.raises(UnknownWordError, match="close matches: king"):
        vocab["King"]  # GloVe is lowercase: the lowercase spelling is suggested first


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_files_round_trip(tmp_path, binary):
    words = ["king", "queen", "man", "woman", "the"]
    vectors = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    keyed = KeyedVectors(7)
    keyed.add_vectors(words, vectors)
    path = tmp_path / ("vectors.bin" if binary else "vectors.txt")
    keyed.save_word2vec_format(str(path), binary=binary)
    E, vocab = load_word_vectors(path)
    assert vocab.words == words
    assert torch.allclose(E, torch.from_numpy(vectors), atol=1e-5)


def test_glove_text_files_have_no_header(tmp_path):
    path = tmp_path / "glove.6B.3d.txt"
    path.write_text("the 0.1 0.2 0.3\nking -1 0.5 2\nqueen 0 0 1\n")
    E, vocab = load_word_vectors(path)
    assert vocab.words == ["the", "king", "queen"]
    assert E.shape == (3, 3) and E[1, 2].item() == 2.0


def test_bad_word_vector_files_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="word2vec"):
        load_word_vectors(tmp_path / "nothing.txt")
    path = tmp_path / "broken.txt"
    path.write_text("3 4\nking 1 2\n")
    with pytest.raises(ValueError, match="could not be read"):
        load_word_vectors(path)


def _tiny_llama(directory, tokens=("<unk>", "<s>", "</s>", "▁king", "▁queen", "▁man", "▁woman", "ing",
                                    "▁King", "▁the", "s"), embeddings=None):
    """A random 2-layer LLaMA with a SentencePiece-style vocabulary, saved like a real one;
    ``embeddings`` ([vocab, 16]) replaces its input embedding matrix."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    tokens = list(tokens)
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(directory)
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    model = LlamaModel(config)
    if embeddings is not None:
        model.get_input_embeddings().weight.data.copy_(embeddings)
    model.save_pretrained(directory)
    return model, tokens


def _cased_trap() -> tuple[list[str], torch.Tensor]:
    """A cased vocabulary laid out like the seed post's LLaMA-2 list for king - man + woman:
    ▁king first, then ▁King, then ▁queen (e_i is the i-th axis; king is long, as frequent
    words' vectors tend to be).

    With t = king - man + woman = 3e0 - e1 + e2: cos(king, t) = 0.905, cos(King, t) = 0.874,
    cos(queen, t) = 0.849; every other token is an axis of its own, at cosine 0 or 0.3.
    """
    tokens = ["<unk>", "<s>", "</s>", "▁king", "▁man", "▁woman", "▁King", "▁queen", "▁Woman",
              "▁women", "▁the", "▁prince", "ing", "s"]
    e = torch.eye(16)
    rows = {"▁king": 3 * e[0], "▁man": e[1], "▁woman": e[2], "▁King": 3 * e[0] + 0.8 * e[3],
            "▁queen": 3 * e[0] + 0.6 * e[2] + 1.5 * e[4], "▁Woman": e[2] + 0.1 * e[5]}
    spare = iter(range(6, 16))
    return tokens, torch.stack([rows[t] if t in rows else e[next(spare)] for t in tokens])


def test_seed_experiment_excludes_case_variants_on_a_cased_vocabulary(tmp_path):
    """Excluding only the inputs' own tokens would answer ▁King; excluding their variants, ▁queen."""
    tokens, embeddings = _cased_trap()
    _tiny_llama(tmp_path, tokens, embeddings)
    E, vocab = load_token_embeddings(tmp_path)
    assert vocab.words == tokens
    assert vocab.lookup(input_variants(vocab.words, ["king", "man", "woman"])) == \
        ["▁king", "▁man", "▁woman", "▁King", "▁Woman"]
    target = E[vocab["▁king"]] - E[vocab["▁man"]] + E[vocab["▁woman"]]
    own_tokens, _ = nearest_neighbours(E, target, 1, exclude=vocab.ids(["▁king", "▁man", "▁woman"]))
    assert vocab.lookup(own_tokens) == ["▁King"]  # the trap the fixture sets
    rows = {(row.query, row.excluded): row for row in seed_experiment(E, vocab.words, k=3)}
    assert rows["king - man + woman", False].top == ["▁king", "▁King", "▁queen"]
    assert rows["king - man + woman", False].queen_rank == 3
    assert rows["king - man + woman", True].top[0] == "▁queen"
    assert rows["king - man + woman", True].queen_rank == 1


def test_token_embeddings_of_a_local_llama_directory(tmp_path):
    model, tokens = _tiny_llama(tmp_path)
    E, vocab = load_token_embeddings(tmp_path)
    assert torch.equal(E, model.get_input_embeddings().weight.detach())
    assert vocab.words == tokens
    indices, words = whole_word_tokens(vocab)
    assert words == ["king", "queen", "man", "woman", "King", "the"]
    assert vocab.lookup(indices)[0] == "▁king"


def test_missing_model_directory_says_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a local Hugging Face model directory"):
        load_token_embeddings(tmp_path / "llama-2-7b")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_token_embeddings(tmp_path)


def test_minilm_token_embeddings():
    E, vocab = load_token_embeddings()
    assert E.shape == (30522, 384) and E.dtype == torch.float32
    indices, words = whole_word_tokens(vocab)
    assert "king" in words and not any(w.startswith("#") for w in words)
    assert len(Vocabulary(words)) == len(indices)
