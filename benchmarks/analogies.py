"""Benchmark: evaluate_analogies against gensim's evaluate_word_analogies, one run, one table.

GloVe 6B 50-d, the full Google test set, gensim's protocol (restrict_vocab=300,000,
case-insensitive, 3CosAdd). Prints both times, the speed-up, whether every section's count
agrees, and where our time goes (the cosine products vs the rest).

    .venv/bin/python benchmarks/analogies.py
"""

import time

import torch
from gensim.models import KeyedVectors
from gensim.test.utils import datapath

from solutions.embedding_arithmetic import evaluate_analogies, normalize_rows
from utils.artifacts import load_glove

QUESTIONS = datapath("questions-words.txt")


def main() -> None:
    E, vocab = load_glove()
    keyed = KeyedVectors(E.shape[1])
    keyed.add_vectors(vocab.words, E.numpy())

    start = time.perf_counter()
    ours = evaluate_analogies(E, vocab.words, QUESTIONS)
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    _, sections = keyed.evaluate_word_analogies(QUESTIONS, restrict_vocab=300_000, case_insensitive=True)
    gensim_s = time.perf_counter() - start
    theirs = {s["section"]: (len(s["correct"]), len(s["correct"]) + len(s["incorrect"])) for s in sections[:-1]}

    # the floor: the cosines of the test set's distinct words with every word, nothing else
    # (no gathering per question, no exclusion, no argmax)
    En = normalize_rows(E[:300_000])
    words = torch.unique(ours.questions[:, :3])
    word_vectors = En[words]
    start = time.perf_counter()
    with torch.no_grad():
        for tile in En.split(2048):
            word_vectors @ tile.T
    products_s = time.perf_counter() - start

    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'':38s} {'seconds':>8s}")
    print(f"{'gensim evaluate_word_analogies':38s} {gensim_s:8.1f}")
    print(f"{'evaluate_analogies (ours)':38s} {ours_s:8.1f}")
    print(f"{'  of which the cosine products alone':38s} {products_s:8.1f}")
    print(f"speed-up: {gensim_s / ours_s:.1f}x")
    print(f"counts: ours {ours.correct:,}/{ours.total:,}, gensim {sum(c for c, _ in theirs.values()):,}/"
          f"{sum(t for _, t in theirs.values()):,}; every section identical: {ours.sections == theirs}")
    multiply_adds = len(words) * 300_000 * E.shape[1]
    print(f"{len(words):,} distinct words x 300,000: {multiply_adds:.3g} multiply-adds; "
          f"{multiply_adds / products_s / 1e9:.1f} G multiply-adds/s in the products")


if __name__ == "__main__":
    main()
