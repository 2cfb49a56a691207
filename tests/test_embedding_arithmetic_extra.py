"""Chapter 1's project tests: agreement with gensim, the loaders, and bad input."""

import random

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from gensim.test.utils import datapath

from solutions.embedding_arithmetic import evaluate_analogies, read_analogy_questions
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


def test_matches_gensim_on_glove_question_for_question(glove, tmp_path):
    """Every section of the real test set, the first 40 questions of each (CI-sized)."""
    E, vocab = glove
    lines = []
    for section in read_analogy_questions(datapath("questions-words.txt")):
        lines.append(f": {section.name}")
        lines += [" ".join(q) for q in section.questions[:40]]
    path = tmp_path / "subset.txt"
    path.write_text("\n".join(lines) + "\n")
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


def _tiny_llama(directory):
    """A random 2-layer LLaMA with a SentencePiece-style vocabulary, saved like a real one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    tokens = ["<unk>", "<s>", "</s>", "▁king", "▁queen", "▁man", "▁woman", "ing", "▁King", "▁the", "s"]
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(directory)
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    model = LlamaModel(config)
    model.save_pretrained(directory)
    return model, tokens


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
