"""Hidden checks for chapter 1, embedding arithmetic.

Each case builds small inputs from its seed, calls the implementation under test, and
returns plain data; see ``utils.checks``. Inputs are chosen so that each plausible mistake
changes the answer: rows of very different norms (cosine vs dot product), inputs that are
their own best answer (exclusion), a vocabulary with case variants and words past the
restriction (the gensim protocol).
"""

from pathlib import Path
import tempfile

import torch

from utils.checks import Mismatch, Suite, beyond

suite = Suite("embedding_arithmetic")


def _matrix(seed: int, n: int, d: int, spread: float = 1.5) -> torch.Tensor:
    """Random rows whose norms differ by orders of magnitude."""
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(n, d, generator=g)
    return E * torch.exp(spread * torch.randn(n, 1, generator=g))


def _unit_norms(result) -> Mismatch | None:
    norms = result.norm(dim=-1)
    nonzero = norms > 0.5
    return beyond((norms[nonzero] - 1).abs().max().item(), 0.0, 1e-4, "some rows do not have unit norm")


# --------------------------------------------------------------------------- normalize_rows


@suite.case("normalize_rows", "rows have unit norm",
            "divide each row by its own norm: E.norm(dim=-1, keepdim=True), not dim=0 or the whole matrix",
            judges=[_unit_norms])
def _(impl, seed):
    return impl.normalize_rows(_matrix(seed, 7, 5))


@suite.case("normalize_rows", "all-zero rows stay zero (no NaN)",
            "a zero row has norm 0: clamp the norm to at least eps before dividing")
def _(impl, seed):
    E = _matrix(seed, 6, 4)
    E[[1, 4]] = 0
    return impl.normalize_rows(E)


@suite.case("normalize_rows", "the input is left unchanged",
            "normalise a copy (E / norms), not E in place (E /= norms)")
def _(impl, seed):
    E = _matrix(seed, 5, 3)
    before = E.clone()
    result = impl.normalize_rows(E)
    return result, E - before


# --------------------------------------------------------------------------- cosine_similarity


@suite.case("cosine_similarity", "all pairs, rows of different norms",
            "cosine is the dot product of unit vectors: normalise the rows of both A and B; "
            "the result is [a, b], A's rows down the side")
def _(impl, seed):
    return impl.cosine_similarity(_matrix(seed, 4, 6), _matrix(seed + 1, 5, 6))


# --------------------------------------------------------------------------- nearest_neighbours


@suite.case("nearest_neighbours", "top k by cosine, best first",
            "rank by cosine, not by dot product (rows have different norms); sort descending")
def _(impl, seed):
    E = _matrix(seed, 60, 8)
    query = torch.randn(8, generator=torch.Generator().manual_seed(seed + 7)) * 3
    indices, scores = impl.nearest_neighbours(E, query, k=6)
    return indices, scores


@suite.case("nearest_neighbours", "excluded indices are never returned",
            "set the scores of excluded rows to -inf before taking the top k")
def _(impl, seed):
    E = _matrix(seed, 40, 8)
    query = E[3] + 0.1 * E[10] / E[10].norm() * E[3].norm()
    indices, scores = impl.nearest_neighbours(E, query, k=5, exclude=[3, 10, 22])
    return indices, scores


# --------------------------------------------------------------------------- input_variants

_TOKENS = ["<s>", "▁king", "King", "▁King", "KING", "▁KING", "king", "kings", "▁kings", "kingdom",
           "▁viking", "▁man", "▁Man", "man", "▁manager", "▁woman", "▁Woman", "▁women", "woman",
           "▁WOMAN", "▁queen", "▁Queen", "▁the", "s", "ing"]


def _shuffled(tokens: list[str], seed: int) -> list[str]:
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
    return [tokens[i] for i in order]


def _matches(impl, tokens: list[str], inputs: list[str]) -> torch.Tensor:
    """Which tokens the implementation calls variants, as a mask: its size never depends on the answer."""
    found = torch.zeros(len(tokens), dtype=torch.bool)
    found[torch.as_tensor(impl.input_variants(tokens, inputs), dtype=torch.long)] = True
    return found


@suite.case("input_variants", "case and word-start variants in a cased SentencePiece vocabulary",
            "compare the tokens' and inputs' spellings after dropping one leading ▁ or Ġ and "
            "lower-casing: King, ▁KING and king are all the input king, but kings and ▁viking are not")
def _(impl, seed):
    return _matches(impl, _shuffled(_TOKENS, seed), ["king", "man", "woman"])


@suite.case("input_variants", "byte-level BPE (Ġ) and WordPiece (##) vocabularies",
            "drop a leading Ġ as well as ▁, but nothing else: ##king is a piece inside a word, not king")
def _(impl, seed):
    tokens = _shuffled(["Ġking", "ĠKing", "king", "##king", "Ġkings", "##s", "Ġqueen", "[CLS]", "K", "ing"], seed)
    return _matches(impl, tokens, ["king"])


@suite.case("input_variants", "inputs given as tokens (▁King, WOMAN)",
            "read the inputs the same way as the tokens: drop the word-start mark and lower-case them too")
def _(impl, seed):
    return _matches(impl, _shuffled(_TOKENS, seed), ["▁King", "WOMAN"])


@suite.case("input_variants", "the result: int64 row indices in increasing order",
            "return torch.tensor([...], dtype=torch.long) of the matching rows, in increasing order")
def _(impl, seed):
    return impl.input_variants(_shuffled(_TOKENS, seed), ["woman", "king"])


@suite.case("input_variants", "no token matches: an empty tensor",
            "when nothing matches, return an empty int64 tensor, torch.tensor([], dtype=torch.long)")
def _(impl, seed):
    return impl.input_variants(_shuffled(_TOKENS, seed), ["zebra"])


# --------------------------------------------------------------------------- analogies

_TRIPLES = [(0, 1, 2), (5, 9, 3), (12, 4, 30), (7, 8, 6), (40, 2, 17)]


@suite.case("analogy_3cosadd", "top 5 for several questions, inputs excluded",
            "normalise E_a, E_b, E_c before adding (b̂ - â + ĉ), rank every word by cosine, "
            "and keep the sign: b - a + c")
def _(impl, seed):
    E = _matrix(seed, 80, 10)
    return torch.stack([impl.analogy_3cosadd(E, a, b, c, k=5) for a, b, c in _TRIPLES])


@suite.case("analogy_3cosadd", "with exclude_inputs=False an input may win",
            "when exclude_inputs is False, nothing is excluded")
def _(impl, seed):
    E = _matrix(seed, 80, 10, spread=0.3)
    return torch.stack([impl.analogy_3cosadd(E, a, b, c, k=3, exclude_inputs=False)
                        for a, b, c in _TRIPLES])


@suite.case("analogy_3cosmul", "top 5 for several questions, inputs excluded",
            "score = s(x,b)·s(x,c)/(s(x,a)+eps) with s = (cos+1)/2; exclude a, b and c")
def _(impl, seed):
    E = _matrix(seed, 80, 10)
    return torch.stack([impl.analogy_3cosmul(E, a, b, c, k=5) for a, b, c in _TRIPLES])


@suite.case("analogy_3cosmul", "eps is used as given",
            "eps is added to s(x, a) in the denominator, whatever its value")
def _(impl, seed):
    E = _matrix(seed, 80, 10)
    return torch.stack([impl.analogy_3cosmul(E, a, b, c, k=5, eps=0.5) for a, b, c in _TRIPLES])


@suite.case("analogy_3cosmul", "with exclude_inputs=False an input may win",
            "when exclude_inputs is False, nothing is excluded")
def _(impl, seed):
    E = _matrix(seed, 80, 10, spread=0.3)
    return torch.stack([impl.analogy_3cosmul(E, a, b, c, k=3, exclude_inputs=False)
                        for a, b, c in _TRIPLES])


# --------------------------------------------------------------------------- projection


@suite.case("project_onto_span", "non-orthogonal, non-unit basis",
            "the rows are not orthonormal: solve for the coefficients (pinv or lstsq), don't "
            "add up projections onto each row separately")
def _(impl, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(8, generator=g)
    basis = torch.randn(3, 8, generator=g) * torch.tensor([[0.5], [3.0], [1.0]])
    basis[1] += 2 * basis[0]  # far from orthogonal
    return v, impl.project_onto_span(v, basis)


@suite.case("project_onto_span", "a basis with a zero row",
            "rows may be linearly dependent, a zero row included: use the pseudo-inverse "
            "(torch.linalg.pinv) or lstsq, not inv or solve of the Gram matrix")
def _(impl, seed):
    # The Gram matrix then has an exactly zero row and column on every machine, so inv and
    # solve fail by construction, not by the luck of rounding.
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(6, generator=g)
    basis = torch.cat([torch.randn(2, 6, generator=g), torch.zeros(1, 6)])
    return v, impl.project_onto_span(v, basis)


@suite.case("project_onto_span", "a basis with a repeated row",
            "rows may be linearly dependent: use the pseudo-inverse (torch.linalg.pinv), not inv")
def _(impl, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(6, generator=g)
    basis = torch.randn(2, 6, generator=g)
    basis = torch.cat([basis, 2 * basis[:1]])
    return v, impl.project_onto_span(v, basis)


# --------------------------------------------------------------------------- batched scores


def _scores(impl, seed, method, eps=1e-3):
    """The best of 40 candidates for each of 5 questions, and all their scores, each row
    divided by its largest |score| (the positive factor per question the exercise allows
    cancels).

    Random cosines lie in [-0.9, 0.9]; each question has one planted answer with
    cos_b = cos_c = 1 and cos_a = -1, which every method ranks first by a wide margin, so the
    best answers do not depend on rounding. Some other cos_a are exactly -1, where s_a = 0 and
    eps alone keeps 3CosMul finite: a wrong eps shows there, on any machine.
    """
    g = torch.Generator().manual_seed(seed)
    cos_a, cos_b, cos_c = (1.8 * torch.rand(5, 40, generator=g) - 0.9 for _ in range(3))
    cos_a[:, :4] = -1.0
    planted = torch.randint(4, 40, (5,), generator=g)
    rows = torch.arange(5)
    cos_a[rows, planted], cos_b[rows, planted], cos_c[rows, planted] = -1.0, 1.0, 1.0
    scores = impl.analogy_scores(cos_a, cos_b, cos_c, method, eps)
    return scores.argmax(dim=1), scores / scores.abs().amax(dim=1, keepdim=True)


for _method, _mistake in [
        ("3cosadd", "cos(x, b̂ - â + ĉ) is proportional to cos_b - cos_a + cos_c"),
        ("3cosmul", "s = (cos + 1) / 2 for each of a, b, c; score = s_b · s_c / (s_a + eps)"),
        ("only_c", "the only-c baseline scores each candidate by its cosine with c alone"),
        ("ignore_a", "the ignore-a baseline scores candidates by cos_b + cos_c")]:
    suite.case("analogy_scores", f"scores by {_method}", _mistake)(
        lambda impl, seed, method=_method: _scores(impl, seed, method))


@suite.case("analogy_scores", "3CosMul uses eps as given",
            "eps is added to s_a = (cos_a + 1) / 2 in the denominator, whatever its value")
def _(impl, seed):
    return _scores(impl, seed, "3cosmul", eps=0.25)


@suite.case("analogy_scores", "an unknown method is refused",
            "raise ValueError for a method name you don't know, naming the valid ones")
def _(impl, seed):
    cosines = torch.zeros(2, 3)
    try:
        impl.analogy_scores(cosines, cosines, cosines, "4cosadd")
    except ValueError:
        return "ValueError"
    return "no error"


# --------------------------------------------------------------------------- evaluation


def _analogy_world(seed: int, directory: Path) -> tuple[torch.Tensor, list[str], Path, int]:
    """A small vocabulary where offsets mostly work, with traps for each protocol rule.

    Countries and capitals differ by one offset, so 3CosAdd mostly answers right; the
    nearest word to b - a + c is often an input (exclusion matters); a near copy of each
    capital sits past position ``restrict_vocab`` (restriction matters); rare case variants
    carry different vectors (the most frequent variant must win); upper-case and unknown
    words appear in the file (case-insensitive look-up, skipping).
    """
    g = torch.Generator().manual_seed(seed)
    n, d = 12, 16
    offset = torch.randn(d, generator=g)
    countries = torch.randn(n, d, generator=g)
    capitals = countries + offset + 0.35 * torch.randn(n, d, generator=g)
    fillers = torch.randn(20, d, generator=g) * 0.8
    country_words = [f"country{i}" for i in range(n)]
    capital_words = [f"capital{i}" for i in range(n)]
    words = country_words + capital_words + [f"filler{i}" for i in range(20)]
    rows = [countries, capitals, fillers]
    # case variants: rarer, with misleading vectors
    words += ["Country0", "CAPITAL1", "Capital2"]
    rows.append(torch.randn(3, d, generator=g) * 2)
    # past the restriction (restrict_vocab=len(words) so far): near-copies of the answers
    restrict = len(words)
    words += [f"echo{i}" for i in range(n)]
    rows.append(capitals + 0.05 * torch.randn(n, d, generator=g))
    E = torch.cat(rows)

    lines = [": capitals"]
    for i in range(n):
        j = (i + 3) % n
        a, b = ("COUNTRY0", "capital0") if i == 0 else (country_words[i], capital_words[i])
        lines.append(f"{a} {b} {country_words[j]} {capital_words[j]}")
    lines.append("country1 capital1 atlantis atlantiscity")  # unknown words: skipped
    lines.append(": reversed")
    for i in range(n):
        j = (i + 5) % n
        lines.append(f"{capital_words[i]} {country_words[i]} Capital{j} {country_words[j]}")
    lines.append("echo1 country1 capital2 country2")  # echo1 lies past the restriction
    path = directory / "questions.txt"
    path.write_text("\n".join(lines) + "\n")
    return E, words, path, restrict


def _evaluate(impl, seed, **kwargs):
    with tempfile.TemporaryDirectory() as tmp:
        E, words, path, restrict = _analogy_world(seed, Path(tmp))
        result = impl.evaluate_analogies(E, words, path, restrict_vocab=restrict, **kwargs)
        return {"sections": {k: tuple(v) for k, v in result.sections.items()},
                "correct": result.correct, "total": result.total, "accuracy": result.accuracy}


@suite.case("evaluate_analogies", "3CosAdd with the gensim protocol",
            "follow gensim: keep only the first restrict_vocab words, upper-case words and let "
            "the most frequent variant win, skip questions with an unknown word, exclude the inputs")
def _(impl, seed):
    return _evaluate(impl, seed)


@suite.case("evaluate_analogies", "3CosMul",
            "method='3cosmul' scores s(x,b)·s(x,c)/(s(x,a)+1e-3) with s = (cos+1)/2")
def _(impl, seed):
    return _evaluate(impl, seed, method="3cosmul")


@suite.case("evaluate_analogies", "case-sensitive look-up",
            "with case_insensitive=False words are matched exactly as written")
def _(impl, seed):
    return _evaluate(impl, seed, case_insensitive=False)


# --------------------------------------------------------------------------- random projection


def _orthonormal_columns(d: int, k: int):
    def judge(Q) -> Mismatch | None:
        if tuple(Q.shape) != (d, k):
            return Mismatch(f"the result has shape {tuple(Q.shape)}, expected ({d}, {k})", form=True)
        gap = (Q.T.double() @ Q.double() - torch.eye(k, dtype=torch.float64)).abs().max().item()
        return beyond(gap, 0.0, 1e-4, "the columns are not orthonormal (Qᵀ Q is not the identity)")
    return judge


for _d, _k in [(7, 3), (6, 6)]:
    suite.case("random_orthonormal_projection", f"orthonormal columns, d = {_d}, k = {_k}",
               "a Gaussian matrix is not orthonormal, even scaled or with unit columns: take the Q of "
               "torch.linalg.qr(torch.randn(d, k, generator=...)), shape [d, k]",
               judges=[_orthonormal_columns(_d, _k)], compare=False)(
        lambda impl, seed, d=_d, k=_k: impl.random_orthonormal_projection(d, k, seed))


@suite.case("random_orthonormal_projection", "a seed fixes the projection; another seed changes it",
            "draw from torch.Generator().manual_seed(seed), not from the global random state, and "
            "make the projection random rather than fixed axes")
def _(impl, seed):
    first, again, other = (impl.random_orthonormal_projection(6, 3, s) for s in (seed, seed, seed + 1))
    return (first - again).abs().max().item(), bool((first - other).abs().max() > 0.1)


_DRAWS, _SPAN = 200, (5, 2)


def _uniform_subspace(mean_projector) -> Mismatch | None:
    """Averaged over random draws, the projector Q Qᵀ onto a uniformly random k-dimensional
    subspace of R^d is (k/d)·I. Each entry's mean has a standard deviation below 0.019 over
    200 draws, so 0.1 is more than 5 of them; fixed axes miss by 1 - k/d = 0.6."""
    d, k = _SPAN
    gap = (mean_projector - k / d * torch.eye(d)).abs().max().item()
    return beyond(gap, 0.0, 0.1, "the subspace is not uniformly random: Q Qᵀ averaged over seeds is not (k/d)·I")


@suite.case("random_orthonormal_projection", "a uniformly random subspace",
            "orthonormalise a Gaussian matrix (all directions equally likely) rather than choosing "
            "coordinate axes", judges=[_uniform_subspace], compare=False)
def _(impl, seed):
    d, k = _SPAN
    total = torch.zeros(d, d, dtype=torch.float64)
    for draw in range(_DRAWS):
        Q = impl.random_orthonormal_projection(d, k, seed * _DRAWS + draw).double()
        total += Q @ Q.T
    return total / _DRAWS


test_hidden_check = suite.pytest_function()
