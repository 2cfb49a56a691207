"""Chapter 1, embedding arithmetic: reference solutions.

Cosine geometry, nearest neighbours, the seed post's experiment (with the inputs and their
case and word-start variants excluded), the 3CosAdd and 3CosMul analogy solvers, a
vectorised evaluation on the Google analogy test set that agrees question for question
with ``gensim.models.KeyedVectors.evaluate_word_analogies``, its baselines, and random
orthonormal projections for the dimension sweep.

Shapes: ``E`` is an embedding matrix ``[vocab, d]``; words are given by row index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def normalize_rows(E: Float[Tensor, "n d"], eps: float = 1e-8) -> Float[Tensor, "n d"]:
    """Each row divided by its L2 norm: Ê_i = E_i / max(‖E_i‖, eps).

    An all-zero row stays zero (it is divided by eps, not by 0).
    """
    return E / E.norm(dim=-1, keepdim=True).clamp(min=eps)


def cosine_similarity(A: Float[Tensor, "a d"], B: Float[Tensor, "b d"]) -> Float[Tensor, "a b"]:
    """All pairwise cosines: out[i, j] = Â_i · B̂_j."""
    return normalize_rows(A) @ normalize_rows(B).T


def nearest_neighbours(
    E: Float[Tensor, "vocab d"], query: Float[Tensor, "d"], k: int = 10, exclude=()
) -> tuple[Int[Tensor, "k"], Float[Tensor, "k"]]:
    """The ``k`` rows of ``E`` with the highest cosine to ``query``, best first.

    Rows whose index is in ``exclude`` (a sequence or tensor of row indices) are never
    returned. Returns ``(indices, scores)``: an int64 tensor ``[k]`` and a float tensor ``[k]``.
    """
    scores = cosine_similarity(query[None, :], E)[0]
    scores[torch.as_tensor(exclude, dtype=torch.long, device=E.device)] = -torch.inf
    top = scores.topk(k)
    return top.indices, top.values


def analogy_3cosadd(E: Float[Tensor, "vocab d"], a: int, b: int, c: int, k: int = 1,
                    exclude_inputs: bool = True) -> Int[Tensor, "k"]:
    """a : b :: c : ?  (man : king :: woman : ?) by 3CosAdd.

    Returns the ``k`` indices x with the highest cos(E_x, b̂ - â + ĉ), where â = E_a / ‖E_a‖
    and so on. With ``exclude_inputs`` the rows a, b and c are never returned.
    """
    En = normalize_rows(E)
    target = En[b] - En[a] + En[c]
    indices, _ = nearest_neighbours(E, target, k, exclude=(a, b, c) if exclude_inputs else ())
    return indices


def analogy_3cosmul(E: Float[Tensor, "vocab d"], a: int, b: int, c: int, k: int = 1,
                    eps: float = 1e-3, exclude_inputs: bool = True) -> Int[Tensor, "k"]:
    """a : b :: c : ?  by 3CosMul (Levy & Goldberg 2014).

    score(x) = s(x, b) · s(x, c) / (s(x, a) + eps), with s = (cos + 1) / 2 in [0, 1] so that
    no factor is negative. Returns the ``k`` best indices, inputs excluded if asked.
    """
    s = (cosine_similarity(E[[a, b, c]], E) + 1) / 2
    scores = s[1] * s[2] / (s[0] + eps)
    if exclude_inputs:
        scores[[a, b, c]] = -torch.inf
    return scores.topk(k).indices


def project_onto_span(v: Float[Tensor, "d"], basis: Float[Tensor, "r d"]) -> Float[Tensor, "d"]:
    """The orthogonal projection of ``v`` onto the span of the rows of ``basis``.

    With B = basisᵀ ([d, r]), the projection is B B⁺ v, where B⁺ is the pseudo-inverse; it
    works for rows that are not orthogonal, not unit, or even linearly dependent.
    """
    B = basis.T
    return B @ (torch.linalg.pinv(B) @ v)


# --------------------------------------------------------------------------- the seed's experiment


def input_variants(tokens: list[str], inputs: list[str]) -> Int[Tensor, "m"]:
    """The rows of every token that spells one of ``inputs``, whatever its case or word-start mark.

    A token matches an input when both are equal after dropping one leading word-start mark
    (``▁`` in SentencePiece, ``Ġ`` in byte-level BPE) and lower-casing: for the input
    ``king``, the tokens ``king``, ``King``, ``▁king``, ``▁KING`` and ``Ġking`` match, while
    ``kings``, ``kingdom`` and ``##king`` (a WordPiece piece inside a word) do not. Inputs
    are read the same way, so ``▁King`` as an input means ``king``.

    Returns the matching row indices in increasing order: an int64 tensor ``[m]``, empty
    when nothing matches.
    """
    def spelling(token: str) -> str:
        return (token[1:] if token.startswith(("▁", "Ġ")) else token).lower()

    wanted = {spelling(word) for word in inputs}
    return torch.tensor([i for i, token in enumerate(tokens) if spelling(token) in wanted], dtype=torch.long)


WORD_START = ("▁", "Ġ")  # SentencePiece and byte-level BPE mark a token that starts a word


def word_row(tokens: list[str], word: str) -> int:
    """The row of ``word``: its word-start token (``▁king``, ``Ġking``) if there is one, else ``king``."""
    for token in [mark + word for mark in WORD_START] + [word]:
        if token in tokens:
            return tokens.index(token)
    raise KeyError(f"{word!r} is not a token of this vocabulary, with or without a word-start mark")


@dataclass
class SeedQuery:
    """One line of the seed's experiment: a query, whether its words were excluded, the
    ``k`` nearest tokens, and the rank of ``queen``."""

    query: str
    excluded: bool
    top: list[str]
    queen_rank: int


def seed_experiment(E: Float[Tensor, "vocab d"], tokens: list[str], k: int = 10) -> list[SeedQuery]:
    """The seed post's five queries, each answered with nothing excluded and with its words excluded.

    "Its words" means every variant of them (``input_variants``): on a cased vocabulary
    ``King`` is as much the input as ``king``. Words are looked up with ``word_row``; the
    rank of ``queen`` is 1-based and counts only rows that are not excluded.
    """
    king, man, woman, queen = (E[word_row(tokens, w)] for w in ("king", "man", "woman", "queen"))
    queries = {
        "king - man + woman": (king - man + woman, ["king", "man", "woman"]),
        "king + woman": (king + woman, ["king", "woman"]),
        "king": (king, ["king"]),
        "woman": (woman, ["woman"]),
        "queen projected on span(king, man, woman)":
            (project_onto_span(queen, torch.stack([king, man, woman])), ["king", "man", "woman"]),
    }
    En = normalize_rows(E)  # once: every query is scored against the same rows
    queen_row = word_row(tokens, "queen")
    found = []
    for name, (query, inputs) in queries.items():
        scores = En @ normalize_rows(query[None])[0]
        for excluded in (False, True):
            if excluded:
                scores[input_variants(tokens, inputs).to(E.device)] = -torch.inf
            top = scores.topk(k).indices.tolist()
            rank = int((scores > scores[queen_row]).sum()) + 1
            found.append(SeedQuery(name, excluded, [tokens[i] for i in top], rank))
    return found


# --------------------------------------------------------------------------- the test set


@dataclass
class AnalogySection:
    """One section of an analogy file: its name and its questions as words."""

    name: str
    questions: list[tuple[str, str, str, str]]


def read_analogy_questions(path: str | Path) -> list[AnalogySection]:
    """Parse a file in the format of Mikolov's ``questions-words.txt``.

    A line ``: name`` starts a section; every other non-blank line is ``a b c d``
    (a : b :: c : d). A malformed line raises ``ValueError`` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no analogy questions file at {path}; expected a text file in "
                                "the format of questions-words.txt (lines ': section' and 'a b c d')")
    sections: list[AnalogySection] = []
    with path.open(encoding="utf-8", errors="strict") as lines:
        for line_no, line in enumerate(lines, start=1):
            if line.startswith(":"):
                sections.append(AnalogySection(line[1:].strip(), []))
            elif line.strip():
                words = line.split()
                if len(words) != 4:
                    raise ValueError(f"{path}, line {line_no}: expected 4 words 'a b c d', "
                                     f"found {len(words)}: {line.strip()!r}")
                if not sections:
                    raise ValueError(f"{path}, line {line_no}: a question before the first "
                                     "': section' header")
                sections[-1].questions.append(tuple(words))
    if not sections:
        raise ValueError(f"{path} holds no ': section' header; is it an analogy questions file?")
    return sections


def analogy_vocabulary(words: list[str], restrict_vocab: int, case_insensitive: bool
                       ) -> tuple[dict[str, int], Int[Tensor, "restricted"]]:
    """The gensim protocol's vocabulary: the first ``restrict_vocab`` words only.

    Returns ``(key_to_index, canonical)``. Case-insensitive keys are upper-cased and map to
    the most frequent (earliest) of their variants; ``canonical[i]`` is the index that row
    i's key maps to, so ``canonical[i] == i`` unless row i is a rarer case variant.
    """
    kept = words[:restrict_vocab]
    key = str.upper if case_insensitive else str
    key_to_index: dict[str, int] = {}
    for i in range(len(kept) - 1, -1, -1):  # backwards, so the most frequent variant wins
        key_to_index[key(kept[i])] = i
    canonical = torch.tensor([key_to_index[key(w)] for w in kept], dtype=torch.long)
    return key_to_index, canonical


@dataclass
class AnalogyResult:
    """Scores on an analogy test set, per section and in total.

    ``questions [n, 4]`` holds the row indices (a, b, c, expected) of the questions that were
    asked (those with every word in the vocabulary), ``predicted [n]`` the answer given to
    each, ``is_correct [n]`` whether it counts as right (a case variant of the expected word
    does), ``section_of [n]`` the index of its section in ``sections``.
    """

    sections: dict[str, tuple[int, int]]
    questions: Int[Tensor, "n 4"]
    predicted: Int[Tensor, "n"]
    is_correct: Bool[Tensor, "n"]
    section_of: Int[Tensor, "n"]
    skipped: int

    @property
    def correct(self) -> int:
        return sum(c for c, _ in self.sections.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.sections.values())

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


METHODS = ("3cosadd", "3cosmul", "only_c", "ignore_a")


def analogy_scores(cos_a: Float[Tensor, "q v"], cos_b: Float[Tensor, "q v"], cos_c: Float[Tensor, "q v"],
                   method: str, eps: float = 1e-3) -> Float[Tensor, "q v"]:
    """How good each candidate x is as the answer to a batch of questions a : b :: c : ?.

    ``cos_a[i, x]`` is the cosine of candidate x with question i's word a; likewise ``cos_b``
    and ``cos_c``. Every method is a function of these three cosines (Levy & Goldberg 2014).
    A score may differ from the method's by a positive factor per question, which no ranking
    sees:

    * ``3cosadd``: cos(x, b̂ - â + ĉ) = (cos_b - cos_a + cos_c) / ‖b̂ - â + ĉ‖;
    * ``3cosmul``: s_b · s_c / (s_a + eps), with s = (cos + 1) / 2, as ``analogy_3cosmul``;
    * ``only_c``: cos_c, the nearest neighbour of c (a baseline of Linzen 2016);
    * ``ignore_a``: cos(x, b̂ + ĉ), proportional to cos_b + cos_c (Linzen's other baseline).

    Any other ``method`` raises ``ValueError``.
    """
    if method == "3cosadd":
        return cos_b - cos_a + cos_c
    if method == "3cosmul":
        # ((cos_b + 1)/2)((cos_c + 1)/2) / ((cos_a + 1)/2 + eps), with the halves gathered up;
        # in place on the fresh tensors that + makes (this runs on every block of every question)
        return (cos_b + 1).mul_(cos_c + 1).div_(2 * cos_a + (2 + 4 * eps))
    if method == "only_c":
        return cos_c.clone()  # a copy: the caller writes -inf into the scores
    if method == "ignore_a":
        return cos_b + cos_c
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def best_answers(En: Float[Tensor, "vocab d"], questions: Int[Tensor, "q 3"], method: str,
                 exclude_inputs: bool = True, batch_size: int = 256, tile_size: int = 2048
                 ) -> Int[Tensor, "q"]:
    """The best-scoring row of ``En`` (unit rows) for each question (a, b, c), optionally never a, b or c.

    A test set has few distinct words, so each tile of the vocabulary meets them in one
    product, ``cosines [words, tile]``, and every question gathers its three rows from it.
    The [q, vocab] score matrix is never stored: each question keeps a running best over
    the tiles (ties go to the lower index, as with one argmax over the whole row).
    ``only_c`` needs no scores per question at all (``_nearest_to_c``).
    """
    if method == "only_c":
        return _nearest_to_c(En, questions, exclude_inputs, tile_size)
    words, slot = torch.unique(questions, return_inverse=True)  # questions == words[slot]
    word_vectors = En[words]
    best_score = torch.full((len(questions),), -torch.inf, device=En.device)
    best_index = torch.zeros(len(questions), dtype=torch.long, device=En.device)
    for start in range(0, En.shape[0], tile_size):
        cosines = word_vectors @ En[start: start + tile_size].T
        holds_inputs = exclude_inputs and bool(((words >= start) & (words < start + tile_size)).any())
        for first in range(0, len(questions), batch_size):
            batch = slice(first, first + batch_size)
            scores = analogy_scores(*(cosines.index_select(0, slot[batch, i]) for i in range(3)), method)
            if holds_inputs:
                _exclude(scores, questions[batch] - start)
            score, index = _row_max(scores)
            better = score > best_score[batch]
            best_score[batch] = torch.where(better, score, best_score[batch])
            best_index[batch] = torch.where(better, index + start, best_index[batch])
    return best_index


def _nearest_to_c(En: Float[Tensor, "vocab d"], questions: Int[Tensor, "q 3"], exclude_inputs: bool,
                  tile_size: int) -> Int[Tensor, "q"]:
    """The only-c answers: for each question, the row nearest to c, optionally never a, b or c.

    The answer ignores a and b except to exclude them, and at most 3 rows are excluded, so
    the 4 nearest rows of each distinct c hold it: one pass over the vocabulary for the
    distinct words, then each question takes the first of its c's 4 that it may answer.
    """
    words, slot = torch.unique(questions[:, 2], return_inverse=True)
    word_vectors = En[words]
    keep = min(4 if exclude_inputs else 1, En.shape[0])
    top_score = torch.empty(len(words), 0, device=En.device)
    top_index = torch.empty(len(words), 0, dtype=torch.long, device=En.device)
    for start in range(0, En.shape[0], tile_size):
        cosines = word_vectors @ En[start: start + tile_size].T
        tile = cosines.topk(min(keep, cosines.shape[1]), dim=1)
        # the running best come first, so a stable sort breaks ties towards the lower index
        top_score, order = torch.cat([top_score, tile.values], dim=1).sort(dim=1, descending=True, stable=True)
        top_index = torch.cat([top_index, tile.indices + start], dim=1).gather(1, order)
        top_score, top_index = top_score[:, :keep], top_index[:, :keep]
    candidates = top_index[slot]  # [q, keep], best first
    if not exclude_inputs:
        return candidates[:, 0]
    allowed = ~(candidates[:, :, None] == questions[:, None, :]).any(dim=2)
    return candidates.gather(1, allowed.int().argmax(dim=1, keepdim=True))[:, 0]  # the first allowed


def _exclude(scores: Float[Tensor, "q t"], columns: Int[Tensor, "q 3"]) -> None:
    """Set ``scores[i, columns[i, j]]`` to -inf wherever that column lies inside the tile."""
    inside = (columns >= 0) & (columns < scores.shape[1])
    rows = torch.arange(len(columns), device=scores.device)[:, None].expand_as(columns)
    scores[rows[inside], columns[inside]] = -torch.inf


def _row_max(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Max and argmax of each row; NumPy's SIMD argmax is several times faster on CPU."""
    if scores.device.type != "cpu":
        return scores.max(dim=1)
    values = scores.numpy()
    index = values.argmax(axis=1)
    return torch.from_numpy(values[range(len(index)), index]), torch.from_numpy(index)


def evaluate_analogies(E: Float[Tensor, "vocab d"], words: list[str], questions_path: str | Path,
                       method: str = "3cosadd", restrict_vocab: int = 300_000,
                       case_insensitive: bool = True, exclude_inputs: bool = True) -> AnalogyResult:
    """Accuracy on an analogy test set with gensim's protocol, vectorised over questions.

    The vocabulary is the first ``restrict_vocab`` words (see ``analogy_vocabulary``); a
    question with a word outside it is skipped. A question is answered by the best-scoring
    word other than its inputs, where, as in gensim, "other than its inputs" also rules out
    case variants of them among the 5 best candidates.
    """
    if len(words) != E.shape[0]:
        raise ValueError(f"got {len(words)} words for {E.shape[0]} embedding rows; "
                         "words[i] must name row i of E")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    key_to_index, canonical = analogy_vocabulary(words, restrict_vocab, case_insensitive)
    key = str.upper if case_insensitive else str
    sections = read_analogy_questions(questions_path)
    asked, section_of, skipped = [], [], 0
    for s, section in enumerate(sections):
        for question in section.questions:
            ids = [key_to_index.get(key(w)) for w in question]
            if None in ids:
                skipped += 1
                continue
            asked.append(ids)
            section_of.append(s)
    questions = torch.tensor(asked, dtype=torch.long).reshape(-1, 4)
    section_of = torch.tensor(section_of, dtype=torch.long)

    with torch.no_grad():
        En = normalize_rows(E[: len(canonical)].float())
        inputs = questions[:, :3].to(En.device)
        predicted = best_answers(En, inputs, method, exclude_inputs).cpu()
        if exclude_inputs:
            # gensim walks its 5 best candidates and takes the first that is not a case
            # variant of an input (if all 5 are, the last); redo the rare hits that are
            variant = (canonical[predicted][:, None] == questions[:, :3]).any(dim=1)
            for q in variant.nonzero()[:, 0].tolist():
                cos_a, cos_b, cos_c = (En[inputs[q]] @ En.T).split(1)
                scores = analogy_scores(cos_a, cos_b, cos_c, method)[0]
                scores[inputs[q]] = -torch.inf
                top = scores.topk(min(5, len(scores))).indices.cpu()
                allowed = [i for i in top.tolist() if canonical[i] not in questions[q, :3]]
                predicted[q] = allowed[0] if allowed else top[-1]

    hit = canonical[predicted] == questions[:, 3]
    counts: dict[str, tuple[int, int]] = {}
    for s, section in enumerate(sections):
        mine = section_of == s
        correct, total = counts.get(section.name, (0, 0))
        counts[section.name] = (correct + int(hit[mine].sum()), total + int(mine.sum()))
    return AnalogyResult(counts, questions, predicted, hit, section_of, skipped)


# --------------------------------------------------------------------------- baselines


def input_wins(E: Float[Tensor, "vocab d"], result: AnalogyResult, method: str = "3cosadd") -> Bool[Tensor, "n"]:
    """For each question of ``result`` (answered with the inputs excluded): would one of its
    inputs a, b, c have been the answer had they not been excluded?

    Without exclusion the best word is either the answer found with exclusion or one of the
    three inputs, so four scores per question decide it, with no second pass over the
    vocabulary (ties go to the lower index, as in ``best_answers``). This holds when the
    answer with exclusion is the best non-input word, that is, when gensim's case-variant
    rule changed no answer: always in a vocabulary without case variants, such as GloVe's.
    """
    rows = torch.cat([result.predicted[:, None], result.questions[:, :3]], dim=1).to(E.device)
    vectors = normalize_rows(E[rows].float())  # [n, 4, d]: the answer, a, b, c
    cos_a, cos_b, cos_c = (torch.einsum("nd,nmd->nm", vectors[:, i], vectors) for i in (1, 2, 3))
    scores = analogy_scores(cos_a, cos_b, cos_c, method)
    answer_score, answer_row = scores[:, :1], rows[:, :1]
    beats = (scores[:, 1:] > answer_score) | ((scores[:, 1:] == answer_score) & (rows[:, 1:] < answer_row))
    return beats.any(dim=1).cpu()


# --------------------------------------------------------------------------- fewer dimensions


def random_orthonormal_projection(d: int, k: int, seed: int = 0) -> Float[Tensor, "d k"]:
    """A random map from d to k ≤ d dimensions with orthonormal columns: Qᵀ Q = I_k.

    Q is the Q of the QR decomposition of a [d, k] standard Gaussian matrix, so its column
    span is a uniformly random k-dimensional subspace; ``E @ Q`` projects the rows of ``E``
    onto it. At k = d, Q is a rotation and keeps every cosine. The Gaussian is drawn on
    the CPU from ``torch.Generator().manual_seed(seed)``, so a seed gives the same Q on
    every machine and device (move it with ``.to(E.device)``).
    """
    generator = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator))
    return Q
