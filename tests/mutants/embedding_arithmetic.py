"""Deliberately wrong implementations of chapter 1's exercises (each must fail a check),
and correct alternatives written differently from the reference (each must pass)."""

from collections import defaultdict

import torch

from solutions import embedding_arithmetic as ref
from solutions.embedding_arithmetic import analogy_3cosadd, normalize_rows, read_analogy_questions
from tests.mutants import Registry

mutants = Registry()
mutant, alternative = mutants.mutant, mutants.alternative


# --------------------------------------------------------------------------- normalize_rows

@mutant("normalize_rows", "normalises columns (dim=0)")
def _(E, eps=1e-8):
    return E / E.norm(dim=0, keepdim=True).clamp(min=eps)


@mutant("normalize_rows", "divides by the norm of the whole matrix")
def _(E, eps=1e-8):
    return E / E.norm().clamp(min=eps)


@mutant("normalize_rows", "no guard for zero rows")
def _(E, eps=1e-8):
    return E / E.norm(dim=-1, keepdim=True)


@mutant("normalize_rows", "normalises in place")
def _(E, eps=1e-8):
    E /= E.norm(dim=-1, keepdim=True).clamp(min=eps)
    return E


@alternative("normalize_rows", "F.normalize")
def _(E, eps=1e-8):
    return torch.nn.functional.normalize(E, dim=-1, eps=eps)


# --------------------------------------------------------------------------- cosine_similarity

@mutant("cosine_similarity", "dot product, no normalisation")
def _(A, B):
    return A @ B.T


@mutant("cosine_similarity", "normalises only A")
def _(A, B):
    return normalize_rows(A) @ B.T


@mutant("cosine_similarity", "transposed result [b, a]")
def _(A, B):
    return normalize_rows(B) @ normalize_rows(A).T


# --------------------------------------------------------------------------- nearest_neighbours

@mutant("nearest_neighbours", "ranks by dot product")
def _(E, query, k=10, exclude=()):
    scores = E @ query
    scores[list(exclude)] = -torch.inf
    top = scores.topk(k)
    return top.indices, top.values


@mutant("nearest_neighbours", "worst first")
def _(E, query, k=10, exclude=()):
    scores = ref.cosine_similarity(query[None], E)[0]
    scores[list(exclude)] = torch.inf
    top = scores.topk(k, largest=False)
    return top.indices, top.values


@mutant("nearest_neighbours", "ignores exclude")
def _(E, query, k=10, exclude=()):
    top = ref.cosine_similarity(query[None], E)[0].topk(k)
    return top.indices, top.values


@mutant("nearest_neighbours", "returns Python lists")
def _(E, query, k=10, exclude=()):
    indices, scores = ref.nearest_neighbours(E, query, k, exclude)
    return indices.tolist(), scores.tolist()


@alternative("nearest_neighbours", "sorts everything, then filters")
def _(E, query, k=10, exclude=()):
    scores = torch.nn.functional.cosine_similarity(E, query[None], dim=1)
    order = [i for i in scores.argsort(descending=True).tolist() if i not in set(exclude)][:k]
    return torch.tensor(order), scores[order]


# --------------------------------------------------------------------------- analogies

def _scores_3cosadd(E, a, b, c, normalise=True, sign=1.0):
    En = normalize_rows(E)
    V = En if normalise else E
    return ref.cosine_similarity((V[b] - sign * V[a] + sign * V[c])[None], E)[0]


@mutant("analogy_3cosadd", "inputs not normalised")
def _(E, a, b, c, k=1, exclude_inputs=True):
    scores = _scores_3cosadd(E, a, b, c, normalise=False)
    if exclude_inputs:
        scores[[a, b, c]] = -torch.inf
    return scores.topk(k).indices


@mutant("analogy_3cosadd", "sign error: a - b + c")
def _(E, a, b, c, k=1, exclude_inputs=True):
    return analogy_3cosadd(E, b, a, c, k, exclude_inputs)


@mutant("analogy_3cosadd", "inputs never excluded")
def _(E, a, b, c, k=1, exclude_inputs=True):
    return _scores_3cosadd(E, a, b, c).topk(k).indices


@mutant("analogy_3cosadd", "ranks by dot product with unnormalised rows")
def _(E, a, b, c, k=1, exclude_inputs=True):
    En = normalize_rows(E)
    scores = E @ (En[b] - En[a] + En[c])
    if exclude_inputs:
        scores[[a, b, c]] = -torch.inf
    return scores.topk(k).indices


def _3cosmul(E, a, b, c, k, eps, exclude_inputs, shift=True, numerator_a=False):
    cos = ref.cosine_similarity(E[[a, b, c]], E)
    s = (cos + 1) / 2 if shift else cos
    scores = s[0] * s[2] / (s[1] + eps) if numerator_a else s[1] * s[2] / (s[0] + eps)
    if exclude_inputs:
        scores[[a, b, c]] = -torch.inf
    return scores.topk(k).indices


@mutant("analogy_3cosmul", "cosines not shifted to [0, 1]")
def _(E, a, b, c, k=1, eps=1e-3, exclude_inputs=True):
    return _3cosmul(E, a, b, c, k, eps, exclude_inputs, shift=False)


@mutant("analogy_3cosmul", "eps fixed at 1e-3")
def _(E, a, b, c, k=1, eps=1e-3, exclude_inputs=True):
    return _3cosmul(E, a, b, c, k, 1e-3, exclude_inputs)


@mutant("analogy_3cosmul", "a and b swapped")
def _(E, a, b, c, k=1, eps=1e-3, exclude_inputs=True):
    return _3cosmul(E, a, b, c, k, eps, exclude_inputs, numerator_a=True)


@mutant("analogy_3cosmul", "inputs never excluded")
def _(E, a, b, c, k=1, eps=1e-3, exclude_inputs=True):
    return _3cosmul(E, a, b, c, k, eps, False)


# --------------------------------------------------------------------------- projection

@mutant("project_onto_span", "adds projections onto each row (assumes orthogonal rows)")
def _(v, basis):
    return sum((v @ r) / (r @ r) * r for r in basis)


@mutant("project_onto_span", "assumes orthonormal rows")
def _(v, basis):
    return basis.T @ (basis @ v)


@mutant("project_onto_span", "inverts the Gram matrix (fails for dependent rows)")
def _(v, basis):
    return basis.T @ torch.linalg.solve(basis @ basis.T, basis @ v)


@alternative("project_onto_span", "Gram-Schmidt with a rank tolerance")
def _(v, basis):
    q = []
    for r in basis:
        r = r - sum((r @ u) * u for u in q) if q else r
        if r.norm() > 1e-6:
            q.append(r / r.norm())
    return sum((v @ u) * u for u in q)


# --------------------------------------------------------------------------- input_variants

def _variants(tokens, inputs, spelling, inputs_too=True):
    wanted = {spelling(w) if inputs_too else w for w in inputs}
    return torch.tensor([i for i, t in enumerate(tokens) if spelling(t) in wanted], dtype=torch.long)


def _drop_mark(token):
    return token[1:] if token.startswith(("▁", "Ġ")) else token


@mutant("input_variants", "exact tokens only (what the seed experiment used to exclude)")
def _(tokens, inputs):
    return _variants(tokens, inputs, lambda t: t)


@mutant("input_variants", "lower-cases but keeps the word-start mark")
def _(tokens, inputs):
    return _variants(tokens, inputs, str.lower)


@mutant("input_variants", "drops the mark but is case-sensitive")
def _(tokens, inputs):
    return _variants(tokens, inputs, _drop_mark)


@mutant("input_variants", "any token that starts with an input (kings, kingdom)")
def _(tokens, inputs):
    wanted = [_drop_mark(w).lower() for w in inputs]
    return torch.tensor([i for i, t in enumerate(tokens) if _drop_mark(t).lower().startswith(tuple(wanted))],
                        dtype=torch.long)


@mutant("input_variants", "strips '#' too, so WordPiece pieces count")
def _(tokens, inputs):
    return _variants(tokens, inputs, lambda t: t.lstrip("▁Ġ#").lower())


@mutant("input_variants", "the first matching row per input only")
def _(tokens, inputs):
    first = {}
    for i, t in enumerate(tokens):
        first.setdefault(_drop_mark(t).lower(), i)
    return torch.tensor(sorted({first[w.lower()] for w in inputs if w.lower() in first}), dtype=torch.long)


@mutant("input_variants", "inputs taken as written (▁King matches nothing)")
def _(tokens, inputs):
    return _variants(tokens, inputs, lambda t: _drop_mark(t).lower(), inputs_too=False)


@mutant("input_variants", "indices grouped by input, not in increasing order")
def _(tokens, inputs):
    spelled = [_drop_mark(t).lower() for t in tokens]
    return torch.tensor([i for w in inputs for i, t in enumerate(spelled) if t == _drop_mark(w).lower()],
                        dtype=torch.long)


@mutant("input_variants", "returns a Python list")
def _(tokens, inputs):
    return ref.input_variants(tokens, inputs).tolist()


@alternative("input_variants", "a regular expression, any number of marks")
def _(tokens, inputs):
    import re
    spelling = re.compile(r"^[▁Ġ]*(.*)$")
    wanted = {spelling.match(w).group(1).casefold() for w in inputs}
    found = [i for i, t in enumerate(tokens) if spelling.match(t).group(1).casefold() in wanted]
    return torch.as_tensor(found, dtype=torch.int64).reshape(-1)


# --------------------------------------------------------------------------- batched scores

@alternative("analogy_scores", "the formulas written literally")
def _(cos_a, cos_b, cos_c, method, eps=1e-3):
    s_a, s_b, s_c = ((cos + 1) / 2 for cos in (cos_a, cos_b, cos_c))
    if method == "3cosadd":
        return cos_b - cos_a + cos_c
    if method == "3cosmul":
        return s_b * s_c / (s_a + eps)
    if method == "only_c":
        return cos_c * 1.0
    if method == "ignore_a":
        return (cos_b + cos_c) / 2  # a positive factor per question is allowed
    raise ValueError(method)


@mutant("analogy_scores", "3CosMul without the shift to [0, 1]")
def _(cos_a, cos_b, cos_c, method, eps=1e-3):
    if method == "3cosmul":
        return cos_b * cos_c / (cos_a + eps)
    return ref.analogy_scores(cos_a, cos_b, cos_c, method, eps)


@mutant("analogy_scores", "3CosMul: eps added to cos_a, before halving")
def _(cos_a, cos_b, cos_c, method, eps=1e-3):
    if method == "3cosmul":
        return (cos_b + 1) / 2 * (cos_c + 1) / 2 / ((cos_a + eps + 1) / 2)
    return ref.analogy_scores(cos_a, cos_b, cos_c, method, eps)


@mutant("analogy_scores", "3CosMul ignores the eps argument")
def _(cos_a, cos_b, cos_c, method, eps=1e-3):
    return ref.analogy_scores(cos_a, cos_b, cos_c, method)


@mutant("analogy_scores", "ignore-a subtracts a")
def _(cos_a, cos_b, cos_c, method, eps=1e-3):
    return ref.analogy_scores(cos_a, cos_b, cos_c, "3cosadd" if method == "ignore_a" else method, eps)


@mutant("analogy_scores", "sign error in 3CosAdd")
def _(cos_a, cos_b, cos_c, method, eps=1e-3):
    return ref.analogy_scores(cos_b, cos_a, cos_c, method, eps)


@mutant("analogy_scores", "only-c uses b")
def _(cos_a, cos_b, cos_c, method, eps=1e-3):
    return ref.analogy_scores(cos_a, cos_c, cos_b, method, eps) if method == "only_c" else \
        ref.analogy_scores(cos_a, cos_b, cos_c, method, eps)


@mutant("analogy_scores", "unknown methods fall back to 3CosAdd")
def _(cos_a, cos_b, cos_c, method, eps=1e-3):
    return ref.analogy_scores(cos_a, cos_b, cos_c, method if method in ref.METHODS else "3cosadd", eps)


# --------------------------------------------------------------------------- evaluation

def evaluate_analogies_loop(E, words, questions_path, method="3cosadd", restrict_vocab=300_000,
                            case_insensitive=True, last_variant_wins=False, count_unknown=False):
    """A plain loop over questions, as a student might write it; flags switch on mistakes."""
    key = str.upper if case_insensitive else str
    kept = words[:restrict_vocab]
    order = range(len(kept)) if last_variant_wins else range(len(kept) - 1, -1, -1)
    index = {}
    for i in order:
        index[key(kept[i])] = i
    keys = [key(w) for w in kept]
    Er = E[: len(kept)]
    sections = defaultdict(lambda: [0, 0])
    for section in read_analogy_questions(questions_path):
        sections[section.name]  # a section with no known question still counts
        for question in section.questions:
            ids = [index.get(key(w)) for w in question]
            if None in ids:
                sections[section.name][1] += count_unknown
                continue
            a, b, c, d = ids
            if method == "3cosmul":
                cos = ref.cosine_similarity(Er[[a, b, c]], Er)
                s = (cos + 1) / 2
                scores = s[1] * s[2] / (s[0] + 1e-3)
            else:
                En = normalize_rows(Er)
                scores = ref.cosine_similarity((En[b] - En[a] + En[c])[None], Er)[0]
            inputs = {keys[a], keys[b], keys[c]}
            for i, k in enumerate(keys):
                if k in inputs:
                    scores[i] = -torch.inf
            sections[section.name][0] += int(index[keys[int(scores.argmax())]] == d)
            sections[section.name][1] += 1
    return ref.AnalogyResult({k: tuple(v) for k, v in sections.items()}, torch.zeros(0, 4),
                             torch.zeros(0), torch.zeros(0), torch.zeros(0), 0)


alternative("evaluate_analogies", "a loop over questions")(evaluate_analogies_loop)


@mutant("evaluate_analogies", "inputs not excluded")
def _(E, words, questions_path, method="3cosadd", restrict_vocab=300_000, case_insensitive=True):
    return ref.evaluate_analogies(E, words, questions_path, method, restrict_vocab, case_insensitive,
                                  exclude_inputs=False)


@mutant("evaluate_analogies", "restrict_vocab ignored")
def _(E, words, questions_path, method="3cosadd", restrict_vocab=300_000, case_insensitive=True):
    return ref.evaluate_analogies(E, words, questions_path, method, len(words), case_insensitive)


@mutant("evaluate_analogies", "always case-sensitive")
def _(E, words, questions_path, method="3cosadd", restrict_vocab=300_000, case_insensitive=True):
    return ref.evaluate_analogies(E, words, questions_path, method, restrict_vocab, False)


@mutant("evaluate_analogies", "method ignored (always 3CosAdd)")
def _(E, words, questions_path, method="3cosadd", restrict_vocab=300_000, case_insensitive=True):
    return ref.evaluate_analogies(E, words, questions_path, "3cosadd", restrict_vocab, case_insensitive)


@mutant("evaluate_analogies", "the rarest case variant wins")
def _(E, words, questions_path, method="3cosadd", restrict_vocab=300_000, case_insensitive=True):
    return evaluate_analogies_loop(E, words, questions_path, method, restrict_vocab,
                                   case_insensitive, last_variant_wins=True)


@mutant("evaluate_analogies", "unknown words counted as wrong, not skipped")
def _(E, words, questions_path, method="3cosadd", restrict_vocab=300_000, case_insensitive=True):
    return evaluate_analogies_loop(E, words, questions_path, method, restrict_vocab,
                                   case_insensitive, count_unknown=True)


# --------------------------------------------------------------------------- random projection

def _gaussian(d, k, seed):
    return torch.randn(d, k, generator=torch.Generator().manual_seed(seed))


@mutant("random_orthonormal_projection", "a Gaussian matrix, not orthonormalised")
def _(d, k, seed=0):
    return _gaussian(d, k, seed)


@mutant("random_orthonormal_projection", "a Gaussian matrix scaled by 1/sqrt(k) (the JL map)")
def _(d, k, seed=0):
    return _gaussian(d, k, seed) / k ** 0.5


@mutant("random_orthonormal_projection", "unit columns, not orthogonalised")
def _(d, k, seed=0):
    G = _gaussian(d, k, seed)
    return G / G.norm(dim=0, keepdim=True)


@mutant("random_orthonormal_projection", "the first k coordinate axes")
def _(d, k, seed=0):
    return torch.eye(d)[:, :k]


@mutant("random_orthonormal_projection", "ignores the seed (global random state)")
def _(d, k, seed=0):
    Q, _ = torch.linalg.qr(torch.randn(d, k))
    return Q


@mutant("random_orthonormal_projection", "returns Qᵀ, [k, d]")
def _(d, k, seed=0):
    return ref.random_orthonormal_projection(d, k, seed).T


@alternative("random_orthonormal_projection", "left singular vectors of a Gaussian matrix")
def _(d, k, seed=0):
    U, _, _ = torch.linalg.svd(_gaussian(d, k, seed), full_matrices=False)
    return U


@alternative("random_orthonormal_projection", "QR of a square Gaussian, first k columns, signs fixed")
def _(d, k, seed=0):
    Q, R = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return (Q * torch.sign(torch.diagonal(R)))[:, :k]
