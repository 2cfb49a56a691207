"""Chapter 1, embedding arithmetic: reference solutions.

Cosine geometry, nearest neighbours, the 3CosAdd and 3CosMul analogy solvers, and a
vectorised evaluation on the Google analogy test set that agrees question for question
with ``gensim.models.KeyedVectors.evaluate_word_analogies``.

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

    Rows whose index is in ``exclude`` are never returned. Returns ``(indices, scores)``.
    """
    scores = cosine_similarity(query[None, :], E)[0]
    excluded = torch.as_tensor(list(exclude), dtype=torch.long, device=E.device)
    scores[excluded] = -torch.inf
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


def analogy_scores(a: Float[Tensor, "q d"], b: Float[Tensor, "q d"], c: Float[Tensor, "q d"],
                   candidates: Float[Tensor, "v d"], method: str, eps: float = 1e-3
                   ) -> Float[Tensor, "q v"]:
    """How good each candidate is as the answer to a batch of questions a : b :: c : ?.

    All rows are unit vectors. Each method's score is, up to a positive factor per question
    (which no ranking sees): ``3cosadd``: cos(x, b̂ - â + ĉ); ``3cosmul``: as
    ``analogy_3cosmul``; the baselines of Linzen (2016): ``only_c``: cos(x, c) and
    ``ignore_a``: cos(x, b̂ + ĉ).
    """
    if method == "3cosadd":
        return (b - a + c) @ candidates.T
    if method == "3cosmul":
        # s_b·s_c / (s_a + eps) with s = (cos + 1)/2 is (cos_b+1)(cos_c+1) / (2(cos_a+1+2eps))
        scores = (b @ candidates.T).add_(1).mul_((c @ candidates.T).add_(1))
        return scores.div_((a @ candidates.T).add_(1 + 2 * eps))
    if method == "only_c":
        return c @ candidates.T
    if method == "ignore_a":
        return (b + c) @ candidates.T
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def best_answers(En: Float[Tensor, "vocab d"], questions: Int[Tensor, "q 3"], method: str,
                 exclude_inputs: bool = True, batch_size: int = 1024, tile_size: int = 2048
                 ) -> Int[Tensor, "q"]:
    """The best-scoring row for each question (a, b, c), optionally never a, b or c.

    The [q, vocab] score matrix is never stored: each batch of questions meets the vocabulary
    a tile at a time, small enough to stay in cache, keeping a running best (ties go to the
    lower index, as with one argmax over the whole row).
    """
    answers = []
    for batch in questions.split(batch_size):
        a, b, c = (En[batch[:, i]] for i in range(3))
        rows = torch.arange(len(batch), device=En.device)
        best_score = torch.full((len(batch),), -torch.inf, device=En.device)
        best_index = torch.zeros(len(batch), dtype=torch.long, device=En.device)
        for start in range(0, En.shape[0], tile_size):
            scores = analogy_scores(a, b, c, En[start: start + tile_size], method)
            if exclude_inputs:
                inside = (batch >= start) & (batch < start + scores.shape[1])
                scores[rows[:, None].expand_as(batch)[inside], batch[inside] - start] = -torch.inf
            score, index = _row_max(scores)
            better = score > best_score
            best_score = torch.where(better, score, best_score)
            best_index = torch.where(better, index + start, best_index)
        answers.append(best_index)
    return torch.cat(answers) if answers else torch.zeros(0, dtype=torch.long)


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
                a, b, c = (En[i][None] for i in inputs[q])
                scores = analogy_scores(a, b, c, En, method)[0]
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
