"""Chapter 2, linear probing and ablation: reference solutions.

True/false statements generated in code, their MiniLM activations, probes (logistic
regression, difference of means, random directions, a nonlinear MLP), concept erasure
(projecting out the mean difference, LEACE, INLP), Contrast-Consistent Search, and a
forward hook that erases a direction inside the model.

Shapes: ``X [n, d]`` holds one activation vector per statement; ``y [n]`` its label, 0 or 1
(1 = true). Probes that are trained for many layers at once take ``X [inst, n, d]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

# --------------------------------------------------------------------------- datasets


@dataclass
class Statements:
    """A labelled dataset of sentences: ``labels[i]`` is 1 when ``texts[i]`` is true.

    ``items[i]`` names what the statement is about (its first number, its noun): the
    control task gives each item a random label of its own.
    """

    texts: list[str]
    labels: Int[Tensor, "n"]
    items: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def number_comparisons(n: int = 2000, seed: int = 0, low: int = 1, high: int = 99) -> Statements:
    """``n`` distinct statements "a is larger than b." for a != b in [low, high], half true.

    Each ordered pair (a, b) appears at most once, so the set has no duplicates.
    """
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1) if a != b]
    larger = [p for p in pairs if p[0] > p[1]]
    smaller = [p for p in pairs if p[0] < p[1]]
    if n % 2 or n // 2 > len(larger):
        raise ValueError(f"n must be even and at most {2 * len(larger)} for numbers in "
                         f"[{low}, {high}], got {n}")
    rng = random.Random(seed)
    chosen = rng.sample(larger, n // 2) + rng.sample(smaller, n // 2)
    rng.shuffle(chosen)
    return Statements([f"{a} is larger than {b}." for a, b in chosen],
                      torch.tensor([int(a > b) for a, b in chosen]), [str(a) for a, _ in chosen])


CATEGORIES = {
    "animal": "dog cat horse cow lion tiger sheep goat rabbit mouse wolf bear fox deer monkey "
              "elephant zebra camel donkey pig",
    "fruit": "apple banana orange grape pear peach cherry lemon mango plum melon kiwi lime "
             "apricot fig coconut papaya strawberry raspberry pineapple",
    "vehicle": "car bus truck train bicycle boat plane tractor van motorcycle ship taxi scooter "
               "tram jeep helicopter canoe ferry submarine wagon",
    "tool": "hammer saw wrench drill screwdriver chisel axe shovel rake pliers spanner clamp "
            "mallet trowel crowbar scissors knife ladder hoe sickle",
    "instrument": "piano guitar violin drum flute trumpet cello harp saxophone clarinet banjo "
                  "trombone oboe tuba ukulele accordion harmonica organ bagpipes mandolin",
    "country": "France Germany Italy Spain Japan China Russia Egypt Greece Portugal Austria "
               "Poland Sweden Norway Finland Denmark Ireland Hungary Brazil Mexico",
    "colour": "red blue green yellow purple pink brown black white grey violet cyan magenta "
              "beige turquoise crimson scarlet indigo maroon navy",
    "profession": "doctor teacher lawyer nurse pilot farmer baker plumber engineer dentist "
                  "carpenter chef architect journalist electrician surgeon librarian butcher "
                  "tailor firefighter",
}


def category_statements(seed: int = 0, categories: dict[str, str] = CATEGORIES) -> Statements:
    """For every word, "A dog is a kind of animal." (true) and the same sentence with a
    random other category (false): balanced, no duplicates. Extend ``categories`` freely."""
    rng = random.Random(seed)
    names = list(categories)
    rows = []
    for category, words in categories.items():
        for word in words.split():
            other = rng.choice([c for c in names if c != category])
            article = "An" if word[0].lower() in "aeiou" else "A"
            rows += [(f"{article} {word} is a kind of {c}.", int(c == category), word)
                     for c in (category, other)]
    rows = list(dict(((text, (label, item)) for text, label, item in rows)).items())
    rng.shuffle(rows)
    return Statements([t for t, _ in rows], torch.tensor([lab for _, (lab, _) in rows]),
                      [item for _, (_, item) in rows])


def split_indices(n: int, test_fraction: float = 0.3, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A random ``(train, test)`` split of ``range(n)``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = round(n * test_fraction)
    return order[n_test:], order[:n_test]


def split_by_item(items: Sequence[str], test_fraction: float = 0.3, seed: int = 0
                  ) -> tuple[Tensor, Tensor]:
    """A ``(train, test)`` split in which no item appears on both sides (unseen words)."""
    unique = sorted(set(items))
    random.Random(seed).shuffle(unique)
    test_items = set(unique[: round(len(unique) * test_fraction)])
    is_test = torch.tensor([item in test_items for item in items])
    return is_test.logical_not().nonzero()[:, 0], is_test.nonzero()[:, 0]


def control_labels(items: Sequence[str], seed: int = 0) -> Int[Tensor, "n"]:
    """The control task (Hewitt & Liang 2019): each distinct item gets a random 0/1 label,
    and every statement about it carries that label. A probe can only learn it by memorising
    items, so accuracy on it measures the probe's capacity, not the concept."""
    rng = random.Random(seed)
    label_of = {item: rng.randint(0, 1) for item in sorted(set(items))}
    return torch.tensor([label_of[item] for item in items])


def two_informative_dimensions(n_per_class: int = 1000, d: int = 3, seed: int = 0
                               ) -> tuple[Float[Tensor, "n d"], Int[Tensor, "n"]]:
    """The synthetic construction from the source comment, rebuilt with a generator.

    Dimensions 0 and 1 take values in {-1, -0.5, 0, 0.5, 1} with a different distribution
    per class, each predictive of the label on its own; the other dimensions are N(0, 1)
    noise. Returns ``(X [2·n_per_class, d], y)``, class 1 first.
    """
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
    probabilities = {  # (class, dimension) -> P(value)
        (1, 0): [0.0, 0.1, 0.2, 0.3, 0.4], (0, 0): [0.6, 0.2, 0.1, 0.1, 0.0],
        (1, 1): [0.0, 0.05, 0.05, 0.1, 0.8], (0, 1): [0.3, 0.3, 0.3, 0.1, 0.0],
    }
    blocks = []
    for label in (1, 0):
        X = torch.randn(n_per_class, d, generator=g)
        for dim in (0, 1):
            p = torch.tensor(probabilities[label, dim])
            X[:, dim] = values[torch.multinomial(p, n_per_class, replacement=True, generator=g)]
        blocks.append(X)
    y = torch.cat([torch.ones(n_per_class), torch.zeros(n_per_class)]).long()
    return torch.cat(blocks), y


# --------------------------------------------------------------------------- activations


def mean_pool(token_acts) -> Float[Tensor, "texts layers d"]:
    """The mean over each text's real tokens of ``TokenActivations.acts`` (MiniLM's own
    sentence embedding is this mean at the last layer, normalised)."""
    n = int(token_acts.text_index.max()) + 1
    total = torch.zeros(n, *token_acts.acts.shape[1:]).index_add_(0, token_acts.text_index, token_acts.acts)
    return total / torch.bincount(token_acts.text_index, minlength=n)[:, None, None]


# --------------------------------------------------------------------------- labels


def binary_labels(X: Float[Tensor, "... n d"], y: Tensor) -> Tensor:
    """Check that ``y`` holds one 0/1 label per row of ``X``, both classes present; return
    it as a bool mask (True = class 1). Raises ValueError saying what is wrong otherwise."""
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"X and y must be torch tensors, got {type(X).__name__} and {type(y).__name__}")
    if X.ndim < 2:
        raise ValueError(f"X must be [n, d] (one row per example), got shape {tuple(X.shape)}")
    if y.ndim != 1 or len(y) != X.shape[-2]:
        raise ValueError(f"y must be a vector with one label per row of X: X has {X.shape[-2]} rows, "
                         f"y has shape {tuple(y.shape)}")
    if y.is_floating_point() and not torch.isin(y, torch.tensor([0.0, 1.0], dtype=y.dtype)).all():
        raise ValueError("labels must be 0 or 1; convert them first, e.g. y = (y > 0).long()")
    if not y.is_floating_point() and y.dtype != torch.bool and not ((y == 0) | (y == 1)).all():
        raise ValueError(f"labels must be 0 or 1, found {sorted(set(y.unique().tolist()))[:5]}; "
                         "convert them first, e.g. y = (y > 0).long()")
    is_one = y.bool()
    if is_one.all() or not is_one.any():
        raise ValueError("y holds a single class: both classes (0 and 1) are needed to compare them")
    return is_one


# --------------------------------------------------------------------------- directions


def mean_difference_direction(X: Float[Tensor, "n d"], y: Tensor) -> Float[Tensor, "d"]:
    """The unit vector along μ₁ − μ₀, where μ_c is the mean of the rows of X with label c.

    It points from the false (0) statements towards the true (1) ones.
    """
    is_one = binary_labels(X, y)
    difference = X[is_one].mean(0) - X[~is_one].mean(0)
    return difference / difference.norm()


def project_out(X: Float[Tensor, "... d"], direction: Float[Tensor, "d"]) -> Float[Tensor, "... d"]:
    """X with its component along ``direction`` removed: X − (X·û) û, with û = u / ‖u‖.

    ``direction`` need not be unit norm; every row of the result is orthogonal to it.
    """
    norm = direction.norm()
    if direction.ndim != 1 or direction.shape[0] != X.shape[-1]:
        raise ValueError(f"direction must be a vector of size {X.shape[-1]} (the last dimension of "
                         f"X), got shape {tuple(direction.shape)}")
    if norm == 0 or not torch.isfinite(norm):
        raise ValueError("direction is zero (or not finite), so there is nothing to project out; "
                         "were the two class means identical?")
    unit = direction / norm
    return X - (X @ unit)[..., None] * unit


def direction_accuracy(X_train: Float[Tensor, "n d"], y_train: Tensor, X_test: Float[Tensor, "m d"],
                       y_test: Tensor, directions: Float[Tensor, "k d"]) -> Float[Tensor, "k"]:
    """Held-out accuracy of "project onto a direction, threshold" classifiers, one per row.

    Threshold and orientation come from the training set: the midpoint of the two class
    means of the projections, class 1 on the side of its mean. Used for the
    difference-of-means probe and for the random-direction baseline.
    """
    is_one = binary_labels(X_train, y_train)
    scores = X_train @ directions.T
    mean_one, mean_zero = scores[is_one].mean(0), scores[~is_one].mean(0)
    sign = torch.where(mean_one >= mean_zero, 1.0, -1.0)
    predicted = sign * (X_test @ directions.T - (mean_one + mean_zero) / 2) > 0
    return (predicted == y_test.bool()[:, None]).float().mean(0)


def random_directions(k: int, d: int, seed: int = 0) -> Float[Tensor, "k d"]:
    """``k`` random unit vectors in ``d`` dimensions (uniform on the sphere)."""
    u = torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
    return u / u.norm(dim=-1, keepdim=True)


# --------------------------------------------------------------------------- logistic probes


def train_logistic_probes(X: Float[Tensor, "inst n d"], y: Tensor, weight_decay: float = 1e-3,
                          steps: int = 300, lr: float = 1e-2
                          ) -> tuple[Float[Tensor, "inst d"], Float[Tensor, "inst"]]:
    """One logistic-regression probe per instance (e.g. per layer), trained together.

    Instance i predicts P(y=1 | x) = σ(x · w_i + b_i). Its loss is the mean binary
    cross-entropy over the n examples plus ``weight_decay`` · ‖w_i‖² (not on b_i); the
    instances' losses are summed, so each trains as if alone. Full-batch Adam from w = 0,
    b = 0 for ``steps`` steps. Returns ``(w [inst, d], b [inst])``, detached.
    """
    target = binary_labels(X, y).float()
    inst, _, d = X.shape
    w = torch.zeros(inst, d, requires_grad=True)
    b = torch.zeros(inst, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.einsum("ind,id->in", X, w) + b[:, None]
            cross_entropy = F.binary_cross_entropy_with_logits(
                logits, target.expand_as(logits), reduction="none").mean(-1)
            loss = (cross_entropy + weight_decay * w.pow(2).sum(-1)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return w.detach(), b.detach()


def probe_accuracy(X: Float[Tensor, "inst n d"], y: Tensor, w: Float[Tensor, "inst d"],
                   b: Float[Tensor, "inst"]) -> Float[Tensor, "inst"]:
    """Accuracy of each instance's logistic probe: predict 1 where x · w + b > 0."""
    logits = torch.einsum("ind,id->in", X, w) + b[:, None]
    return ((logits > 0) == y.bool()).float().mean(-1)


def standardise(X_train: Float[Tensor, "... n d"], *others: Tensor) -> list[Tensor]:
    """Centre and scale every feature by the training set's mean and std (per instance)."""
    mean = X_train.mean(-2, keepdim=True)
    std = X_train.std(-2, keepdim=True).clamp(min=1e-6)
    return [(X - mean) / std for X in (X_train, *others)]


def logistic_accuracy(X_train: Float[Tensor, "... n d"], y_train: Tensor, X_test: Float[Tensor, "... m d"],
                      y_test: Tensor, **train_kwargs) -> Float[Tensor, "..."]:
    """Held-out accuracy of logistic probes trained on standardised features: [inst] -> [inst]."""
    batched = X_train.ndim == 3
    X_train, X_test = standardise(X_train if batched else X_train[None], X_test if batched else X_test[None])
    w, b = train_logistic_probes(X_train, y_train, **train_kwargs)
    accuracy = probe_accuracy(X_test, y_test, w, b)
    return accuracy if batched else accuracy[0]


# --------------------------------------------------------------------------- a nonlinear probe


def mlp_accuracy(X_train: Float[Tensor, "n d"], y_train: Tensor, X_test: Float[Tensor, "m d"],
                 y_test: Tensor, hidden: int = 64, steps: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-3, seed: int = 0) -> float:
    """Held-out accuracy of a one-hidden-layer ReLU MLP probe (a nonlinear classifier)."""
    target = binary_labels(X_train, y_train).float()
    X_train, X_test = standardise(X_train, X_test)
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(X_train.shape[-1], hidden), nn.ReLU(), nn.Linear(hidden, 1))
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits(mlp(X_train)[:, 0], target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return ((mlp(X_test)[:, 0] > 0) == y_test.bool()).float().mean().item()


# --------------------------------------------------------------------------- erasure


def leace_fit(X: Float[Tensor, "n d"], y: Tensor
              ) -> tuple[Float[Tensor, "d"], Float[Tensor, "d"], Float[Tensor, "d"]]:
    """Fit LEACE (Belrose et al. 2023) on (X, y): returns ``(mean, left, right)``.

    With μ the mean of X, Σ its covariance, σ = Cov(X, y) [d] (y as 0/1), the whitening
    W = Σ^(-1/2) (a pseudo-inverse square root: eigenvalues below max · d · eps count as 0)
    and u = Wσ / ‖Wσ‖, the eraser is

        x' = x − W⁺ u uᵀ W (x − μ) = x − ((x − μ) · right) left,   left = W⁺u, right = Wu.

    It removes the one whitened direction correlated with y and, among all affine maps
    that make Cov(X', y) = 0, moves the data least (in mean squared distance).
    Covariances use 1/n; computed in float64, returned in X's dtype.
    """
    is_one = binary_labels(X, y)
    X64 = X.double()
    n, d = X64.shape
    mean = X64.mean(0)
    centred = X64 - mean
    z = is_one.double()
    sigma = centred.T @ centred / n
    cross = centred.T @ (z - z.mean()) / n
    eigenvalues, V = torch.linalg.eigh(sigma)
    keep = eigenvalues > eigenvalues.max() * d * torch.finfo(torch.float64).eps
    safe = eigenvalues.clamp(min=0)
    whiten = V @ torch.diag(torch.where(keep, safe.rsqrt(), 0.0)) @ V.T
    unwhiten = V @ torch.diag(torch.where(keep, safe.sqrt(), 0.0)) @ V.T
    u = whiten @ cross
    u = u / u.norm()
    return mean.to(X.dtype), (unwhiten @ u).to(X.dtype), (whiten @ u).to(X.dtype)


def leace_erase(X: Float[Tensor, "n d"], y: Tensor) -> Float[Tensor, "n d"]:
    """X after LEACE fitted on (X, y) itself: x' = x − ((x − μ) · right) left.

    Afterwards the class-conditional means of X' are equal (Cov(X', y) = 0), so no linear
    classifier beats the constant one on (X', y) under any convex loss.
    """
    mean, left, right = leace_fit(X, y)
    return X - ((X - mean) @ right)[:, None] * left


def apply_leace(X: Float[Tensor, "... d"], fit: tuple[Tensor, Tensor, Tensor]) -> Float[Tensor, "... d"]:
    """Apply a fitted LEACE eraser (from ``leace_fit`` on other data, e.g. the training set)."""
    mean, left, right = fit
    return X - ((X - mean) @ right)[..., None] * left


def inlp(X_train: Float[Tensor, "n d"], y_train: Tensor, X_test: Float[Tensor, "m d"], y_test: Tensor,
         max_directions: int = 20, **train_kwargs) -> tuple[list[float], Float[Tensor, "k d"]]:
    """Iterative nullspace projection (Ravfogel et al. 2020).

    Repeat: train a logistic probe, record its held-out accuracy, project its weight vector
    out of both sets. Returns the accuracies (before each projection; the first is the
    untouched probe's) and the directions removed [k, d] (unit rows).
    """
    accuracies, directions = [], []
    for _ in range(max_directions):
        w, b = train_logistic_probes(X_train[None], y_train, **train_kwargs)
        accuracies.append(probe_accuracy(X_test[None], y_test, w, b).item())
        directions.append(w[0] / w[0].norm())
        X_train, X_test = project_out(X_train, w[0]), project_out(X_test, w[0])
    return accuracies, torch.stack(directions)


# --------------------------------------------------------------------------- CCS


def ccs_loss(p_pos: Float[Tensor, "... n"], p_neg: Float[Tensor, "... n"]) -> Float[Tensor, "..."]:
    """The Contrast-Consistent Search loss (Burns et al. 2022), averaged over the last dim:

        mean(min(p⁺, p⁻)²) + mean((p⁺ − (1 − p⁻))²)

    confidence (not both near 0.5) plus consistency (p⁺ and p⁻ sum to one). A leading
    dimension (e.g. restarts) is kept: [restarts, n] -> [restarts].
    """
    if p_pos.shape != p_neg.shape:
        raise ValueError(f"p_pos and p_neg must have the same shape, got {tuple(p_pos.shape)} "
                         f"and {tuple(p_neg.shape)}")
    confidence = torch.minimum(p_pos, p_neg).pow(2).mean(-1)
    consistency = (p_pos - (1 - p_neg)).pow(2).mean(-1)
    return confidence + consistency


def normalise_contrast(X_pos: Float[Tensor, "n d"], X_neg: Float[Tensor, "n d"]
                       ) -> tuple[Float[Tensor, "n d"], Float[Tensor, "n d"]]:
    """Centre and scale each half of the contrast pairs on its own, so that what tells the
    halves apart (the words "true"/"false" themselves) is not what the probe sees."""
    return tuple((X - X.mean(0)) / X.std(0).clamp(min=1e-6) for X in (X_pos, X_neg))


def train_ccs(X_pos: Float[Tensor, "n d"], X_neg: Float[Tensor, "n d"], n_restarts: int = 10,
              steps: int = 1000, lr: float = 1e-2, seed: int = 0
              ) -> tuple[Float[Tensor, "d"], Float[Tensor, ""], Float[Tensor, "restarts"]]:
    """Unsupervised CCS probes p = σ(x · w + b) from ``n_restarts`` random starts at once.

    Inputs should already be normalised (``normalise_contrast``). Returns the ``(w, b)`` of
    the restart with the lowest final loss, and every restart's final loss.
    """
    g = torch.Generator().manual_seed(seed)
    d = X_pos.shape[-1]
    w = (torch.randn(n_restarts, d, generator=g) / d ** 0.5).requires_grad_()
    b = torch.zeros(n_restarts, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            p_pos = torch.sigmoid(X_pos @ w.T + b).T
            p_neg = torch.sigmoid(X_neg @ w.T + b).T
            losses = ccs_loss(p_pos, p_neg)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
    best = losses.argmin()
    return w[best].detach(), b[best].detach(), losses.detach()


def ccs_accuracy(X_pos: Float[Tensor, "n d"], X_neg: Float[Tensor, "n d"], y: Tensor,
                 w: Float[Tensor, "d"], b: Float[Tensor, ""]) -> tuple[float, float]:
    """``(accuracy, accuracy with the sign fixed)`` of a CCS probe on contrast pairs.

    The prediction is "true" when ½(p⁺ + 1 − p⁻) > ½. CCS never sees labels, so its
    probe may be perfectly anti-aligned with truth: the second number is max(acc, 1 − acc).
    """
    p_pos, p_neg = torch.sigmoid(X_pos @ w + b), torch.sigmoid(X_neg @ w + b)
    accuracy = (((p_pos + 1 - p_neg) / 2 > 0.5) == y.bool()).float().mean().item()
    return accuracy, max(accuracy, 1 - accuracy)


# --------------------------------------------------------------------------- in the model


def erase_direction_hook(direction: Float[Tensor, "d"]) -> Callable:
    """A forward hook that projects ``direction`` out of a module's output.

    Register it with ``module.register_forward_hook(hook)``. The output is a hidden-state
    tensor [..., d], or a tuple whose first element is one (as some transformer blocks
    return); the hook returns the same structure with the first tensor replaced by
    ``project_out(hidden, direction)``, so every token loses that component.
    """
    def hook(module: nn.Module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        erased = project_out(hidden, direction.to(hidden.device, hidden.dtype))
        return (erased, *output[1:]) if isinstance(output, tuple) else erased

    return hook


def activations_with_hook(texts: Sequence[str], layers: Sequence[int], hook: Callable | None,
                          hook_layer: int, model=None, tokenizer=None) -> Float[Tensor, "texts layers d"]:
    """Mean-pooled activations at ``layers`` while ``hook`` edits the residual stream at
    ``hook_layer`` (the output of block ``hook_layer`` − 1), for every token."""
    from utils.activations import token_activations, transformer_blocks

    if model is None or tokenizer is None:
        from utils.artifacts import load_model

        model, tokenizer = load_model()
    if hook is not None and not 1 <= hook_layer <= len(transformer_blocks(model)):
        raise ValueError(f"hook_layer must be between 1 and {len(transformer_blocks(model))}")
    handle = transformer_blocks(model)[hook_layer - 1].register_forward_hook(hook) if hook else None
    try:
        return mean_pool(token_activations(texts, layers, model, tokenizer, progress=False))
    finally:
        if handle is not None:
            handle.remove()
