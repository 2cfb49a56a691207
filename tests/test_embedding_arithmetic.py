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

from utils.checks import Suite

suite = Suite("embedding_arithmetic")


def _matrix(seed: int, n: int, d: int, spread: float = 1.5) -> torch.Tensor:
    """Random rows whose norms differ by orders of magnitude."""
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(n, d, generator=g)
    return E * torch.exp(spread * torch.randn(n, 1, generator=g))


def _unit_norms(result) -> str | None:
    norms = result.norm(dim=-1)
    nonzero = norms > 0.5
    if not torch.allclose(norms[nonzero], torch.ones_like(norms[nonzero]), atol=1e-4):
        return "some rows do not have unit norm"
    return None


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


def _orthogonal_residual(basis):
    def judge(result):
        if (basis @ (result[0] - result[1])).abs().max() > 1e-3 * result[0].norm():
            return "v minus its projection is not orthogonal to the basis rows"
        return None
    return judge


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


def _ranking(impl, seed, method):
    """Top 10 candidates per question: scores may differ by a positive factor per question."""
    E = torch.nn.functional.normalize(_matrix(seed, 60, 12), dim=1)
    q = torch.tensor(_TRIPLES)
    scores = impl.analogy_scores(E[q[:, 0]], E[q[:, 1]], E[q[:, 2]], E, method)
    return tuple(scores.shape), scores.argsort(dim=1, descending=True)[:, :10]


for _method, _mistake in [
        ("3cosadd", "score candidates against b - a + c (inputs are unit vectors already)"),
        ("3cosmul", "s = (cos + 1) / 2 for each of a, b, c; score = s_b · s_c / (s_a + eps)"),
        ("only_c", "the only-c baseline scores each candidate by its cosine with c alone"),
        ("ignore_a", "the ignore-a baseline scores candidates against b + c")]:
    suite.case("analogy_scores", f"ranking by {_method}", _mistake)(
        lambda impl, seed, method=_method: _ranking(impl, seed, method))


@suite.case("analogy_scores", "an unknown method is refused",
            "raise ValueError for a method name you don't know, naming the valid ones")
def _(impl, seed):
    E = torch.nn.functional.normalize(_matrix(seed, 10, 4), dim=1)
    try:
        impl.analogy_scores(E[:2], E[2:4], E[4:6], E, "4cosadd")
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


test_hidden_check = suite.pytest_function()
