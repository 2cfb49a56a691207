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
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from utils.activations import token_activations, transformer_blocks
from utils.artifacts import load_model

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


def number_comparisons(n: int = 2000, seed: int = 0, low: int = 1, high: int = 99,
                       relations: Sequence[str] = ("larger",)) -> Statements:
    """``n`` distinct statements "a is larger than b." for a != b in [low, high], half true.

    With ``relations=("larger", "smaller")`` the statements are split evenly between the two
    templates ("a is smaller than b." is true when a < b), each half true. Each (a, relation, b)
    appears at most once, so the set has no duplicates.
    """
    unknown = set(relations) - {"larger", "smaller"}
    if unknown:
        raise ValueError(f"relations must be 'larger' or 'smaller', got {sorted(unknown)}")
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1) if a != b]
    per_half = n // (2 * len(relations))
    if n % (2 * len(relations)) or per_half > len(pairs) // 2:
        raise ValueError(f"n must be a multiple of {2 * len(relations)} and at most {len(pairs)} "
                         f"per relation for numbers in [{low}, {high}], got {n}")
    rng = random.Random(seed)
    rows = []
    for relation in relations:
        for truth in (True, False):
            # "a is larger than b." is true when a > b; "a is smaller than b." when a < b
            wanted = [(a, b) for a, b in pairs if ((a > b) == (relation == "larger")) == truth]
            rows += [(a, relation, b, int(truth)) for a, b in rng.sample(wanted, per_half)]
    rng.shuffle(rows)
    return Statements([f"{a} is {relation} than {b}." for a, relation, b, _ in rows],
                      torch.tensor([truth for *_, truth in rows]), [str(a) for a, *_ in rows])


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


def token_from_end(token_acts, k: int) -> Float[Tensor, "texts layers d"]:
    """Each text's ``k``-th real token counted from its end (0 = the last, e.g. [SEP])."""
    n = int(token_acts.text_index.max()) + 1
    last = torch.zeros(n, dtype=torch.long).scatter_reduce_(
        0, token_acts.text_index, torch.arange(len(token_acts.text_index)), "amax")
    first = torch.full((n,), len(token_acts.text_index)).scatter_reduce_(
        0, token_acts.text_index, torch.arange(len(token_acts.text_index)), "amin")
    if (last - k < first).any():
        raise ValueError(f"some texts have fewer than {k + 1} tokens")
    return token_acts.acts[last - k]


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
    w = torch.zeros(inst, d, device=X.device, requires_grad=True)
    b = torch.zeros(inst, device=X.device, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = (w[:, None] @ X.mT)[:, 0] + b[:, None]  # [inst, n]
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
    logits = (w[:, None] @ X.mT)[:, 0] + b[:, None]
    return ((logits > 0) == y.bool()).float().mean(-1)


def feature_moments(X_train: Float[Tensor, "... n d"]) -> tuple[Float[Tensor, "... 1 d"], Float[Tensor, "... 1 d"]]:
    """Each feature's mean and standard deviation over the rows of the training set."""
    return X_train.mean(-2, keepdim=True), X_train.std(-2, keepdim=True).clamp(min=1e-6)


def standardise(X_train: Float[Tensor, "... n d"], *others: Tensor) -> list[Tensor]:
    """Centre and scale every feature by the training set's mean and std (per instance)."""
    mean, std = feature_moments(X_train)
    return [(X - mean) / std for X in (X_train, *others)]


@dataclass
class LogisticProbe:
    """Logistic probes on standardised features, one per instance (e.g. per layer):
    logit(x) = ((x − mean) / std) · w + b, with mean and std from the training set."""

    mean: Float[Tensor, "inst 1 d"]
    std: Float[Tensor, "inst 1 d"]
    w: Float[Tensor, "inst d"]
    b: Float[Tensor, "inst"]

    def logits(self, X: Float[Tensor, "inst m d"]) -> Float[Tensor, "inst m"]:
        return (self.w[:, None] @ ((X - self.mean) / self.std).mT)[:, 0] + self.b[:, None]

    def accuracy(self, X: Float[Tensor, "inst m d"], y: Tensor) -> Float[Tensor, "inst"]:
        return ((self.logits(X) > 0) == y.bool()).float().mean(-1)

    def direction(self, instance: int) -> Float[Tensor, "d"]:
        """The probe's weight vector in the raw (unstandardised) activation space."""
        return self.w[instance] / self.std[instance, 0]


def fit_logistic(X_train: Float[Tensor, "inst n d"], y_train: Tensor, **train_kwargs) -> LogisticProbe:
    """Standardise each instance's features on the training set, then ``train_logistic_probes``."""
    mean, std = feature_moments(X_train)
    w, b = train_logistic_probes((X_train - mean) / std, y_train, **train_kwargs)
    return LogisticProbe(mean, std, w, b)


def logistic_accuracy(X_train: Float[Tensor, "... n d"], y_train: Tensor, X_test: Float[Tensor, "... m d"],
                      y_test: Tensor, **train_kwargs) -> Float[Tensor, "..."]:
    """Held-out accuracy of logistic probes trained on standardised features: [inst] -> [inst]."""
    batched = X_train.ndim == 3
    probe = fit_logistic(X_train if batched else X_train[None], y_train, **train_kwargs)
    accuracy = probe.accuracy(X_test if batched else X_test[None], y_test)
    return accuracy if batched else accuracy[0]


# --------------------------------------------------------------------------- a nonlinear probe


MLP_HIDDEN = 64  # hidden ReLUs of the nonlinear probe


def mlp_accuracy(X_train: Float[Tensor, "... n d"], y_train: Tensor, X_test: Float[Tensor, "... m d"],
                 y_test: Tensor, hidden: int = MLP_HIDDEN, steps: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-3, seed: int = 0) -> Float[Tensor, "..."]:
    """Held-out accuracy of one-hidden-layer ReLU MLP probes (nonlinear classifiers), one per
    instance and trained together, on standardised features: [inst] -> [inst], or [] for [n, d].

    Each is σ(relu(x W₁ + b₁) · w₂ + b₂), trained with full-batch AdamW on the mean binary
    cross-entropy from a seeded PyTorch-style uniform initialisation.
    """
    target = binary_labels(X_train, y_train).float()
    batched = X_train.ndim == 3
    X_train, X_test = standardise(X_train if batched else X_train[None], X_test if batched else X_test[None])
    inst, _, d = X_train.shape
    g = torch.Generator().manual_seed(seed)

    def uniform(*shape, fan_in):  # drawn on the CPU so that every device gets the same probes
        bound = fan_in ** -0.5
        return ((torch.rand(*shape, generator=g) * 2 - 1) * bound).to(X_train.device).requires_grad_()

    W1, b1 = uniform(inst, d, hidden, fan_in=d), uniform(inst, 1, hidden, fan_in=d)
    w2, b2 = uniform(inst, hidden, fan_in=hidden), uniform(inst, 1, fan_in=hidden)

    def logits(X):
        return torch.einsum("inh,ih->in", torch.relu(torch.baddbmm(b1, X, W1)), w2) + b2

    optimizer = torch.optim.AdamW([W1, b1, w2, b2], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits(logits(X_train), target.expand(inst, -1),
                                                      reduction="none").mean(-1).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = ((logits(X_test) > 0) == y_test.bool()).float().mean(-1)
    return accuracy if batched else accuracy[0]


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


def normalise_contrast(X_pos: Float[Tensor, "... n d"], X_neg: Float[Tensor, "... n d"]
                       ) -> tuple[Float[Tensor, "... n d"], Float[Tensor, "... n d"]]:
    """Centre and scale each half of the contrast pairs on its own, so that what tells the
    halves apart (the words "true"/"false" themselves) is not what the probe sees."""
    return tuple((X - X.mean(-2, keepdim=True)) / X.std(-2, keepdim=True).clamp(min=1e-6)
                 for X in (X_pos, X_neg))


def train_ccs(X_pos: Float[Tensor, "... n d"], X_neg: Float[Tensor, "... n d"], n_restarts: int = 10,
              steps: int = 1000, lr: float = 1e-2, seed: int = 0
              ) -> tuple[Float[Tensor, "... restarts d"], Float[Tensor, "... restarts"], Float[Tensor, "... restarts"]]:
    """Unsupervised CCS probes p = σ(x · w + b): ``n_restarts`` random starts for every
    instance of the leading dimensions (e.g. every layer), all trained at once with Adam.

    Inputs should already be normalised (``normalise_contrast``). Returns every restart's
    ``(w, b)`` and its final loss; the usual choice is the restart with the lowest loss.
    """
    *leading, _, d = X_pos.shape
    g = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same starts on every device
    w = (torch.randn(*leading, n_restarts, d, generator=g) / d ** 0.5).to(X_pos.device).requires_grad_()
    b = torch.zeros(*leading, n_restarts, device=X_pos.device, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            losses = ccs_loss(*ccs_probabilities(X_pos, X_neg, w, b))
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
    return w.detach(), b.detach(), losses.detach()


def ccs_probabilities(X_pos: Float[Tensor, "... n d"], X_neg: Float[Tensor, "... n d"],
                      w: Float[Tensor, "... k d"], b: Float[Tensor, "... k"]
                      ) -> tuple[Float[Tensor, "... k n"], Float[Tensor, "... k n"]]:
    """``(p⁺, p⁻)`` of ``k`` probes σ(x · w + b) on every pair, for each leading instance."""
    return tuple(torch.sigmoid(w @ X.mT + b[..., None]) for X in (X_pos, X_neg))


def ccs_accuracy(X_pos: Float[Tensor, "... n d"], X_neg: Float[Tensor, "... n d"], y: Tensor,
                 w: Float[Tensor, "... k d"], b: Float[Tensor, "... k"]) -> Float[Tensor, "... k"]:
    """Accuracy of ``k`` probes on contrast pairs: the pair's statement is called true when
    ½(p⁺ + 1 − p⁻) > ½. CCS never sees labels, so a probe may be perfectly anti-aligned with
    truth (accuracy 0); fix its sign on the training set, never on the test set."""
    p_pos, p_neg = ccs_probabilities(X_pos, X_neg, w, b)
    return (((p_pos + 1 - p_neg) / 2 > 0.5) == y.bool()).float().mean(-1)


# --------------------------------------------------------------------------- in the model


def erase_direction_hook(direction: Float[Tensor, "d"]) -> Callable:
    """A forward hook that projects ``direction`` out of a module's output.

    Register it with ``module.register_forward_hook(hook)``. The output is a hidden-state
    tensor [..., d], or a tuple whose first element is one (as some transformer blocks
    return); the hook returns the same structure with the first tensor replaced by
    ``project_out(hidden, direction)``, so every token loses that component. Move the
    direction to the hidden states' device and dtype first: the model may sit on a GPU, or
    run in another precision.
    """
    def hook(module: nn.Module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        erased = project_out(hidden, direction.to(hidden.device, hidden.dtype))
        return (erased, *output[1:]) if isinstance(output, tuple) else erased

    return hook


def residual_hook(model: nn.Module, layer: int, hook: Callable) -> torch.utils.hooks.RemovableHandle:
    """Register ``hook(module, inputs, hidden)`` on the residual stream at ``layer`` (0 = the
    embeddings, i.e. the input of block 0; L = the output of block L). As with a forward hook,
    whatever it returns (if not None) replaces the hidden states. Remove with ``.remove()``."""
    blocks = transformer_blocks(model)
    if not 0 <= layer <= len(blocks):
        raise ValueError(f"layer must be between 0 (embeddings) and {len(blocks)}, got {layer}")
    if layer > 0:
        return blocks[layer - 1].register_forward_hook(hook)

    def on_input(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        edited = hook(module, args, hidden)
        if edited is None:
            return None
        return ((edited, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": edited})

    return blocks[0].register_forward_pre_hook(on_input, with_kwargs=True)


def pooled_states(batch: dict, layer: int, model: nn.Module,
                  edits: Sequence[tuple[int, Callable]] = ()) -> Float[Tensor, "batch d"]:
    """The mean over each text's real tokens of the residual stream at ``layer``, on the CPU,
    while each ``(layer, hook)`` of ``edits`` edits the forward pass (``residual_hook``).
    ``batch`` is the tokenizer's output, already on the model's device."""
    captured = {}

    def keep(module, inputs, hidden):
        captured["hidden"] = hidden[0] if isinstance(hidden, tuple) else hidden

    handles = [residual_hook(model, at, hook) for at, hook in edits] + [residual_hook(model, layer, keep)]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    mask = batch["attention_mask"][..., None].to(captured["hidden"].dtype)
    return ((captured["hidden"] * mask).sum(1) / mask.sum(1)).float().cpu()


def activations_with_hook(texts: Sequence[str], layers: Sequence[int], hook: Callable | None,
                          hook_layer: int, model=None, tokenizer=None) -> Float[Tensor, "texts layers d"]:
    """Mean-pooled activations at ``layers`` while ``hook`` edits the residual stream at
    ``hook_layer`` (the output of block ``hook_layer`` − 1), for every token."""
    if model is None or tokenizer is None:
        model, tokenizer = load_model()
    if hook is not None and not 1 <= hook_layer <= len(transformer_blocks(model)):
        raise ValueError(f"hook_layer must be between 1 and {len(transformer_blocks(model))}")
    handle = residual_hook(model, hook_layer, hook) if hook else None
    try:
        return mean_pool(token_activations(texts, layers, model, tokenizer, progress=False))
    finally:
        if handle is not None:
            handle.remove()


# --------------------------------------------------------------------------- activation patching


def patch_hook(clean: Float[Tensor, "batch seq d"], where: Bool[Tensor, "batch seq"]) -> Callable:
    """A forward hook that patches in clean activations: wherever ``where[i, t]`` is True,
    the hidden state of token t of row i (all d features) becomes ``clean[i, t]``; every
    other token keeps the module's own output.

    The output is a tensor [batch, seq, d], or a tuple whose first element is one; the hook
    returns the same structure with the first tensor replaced. ``clean`` is cast to the
    output's dtype (the next layer expects its own precision); ``clean`` and ``where`` must
    already be on the output's device (the given code puts them there).
    """
    def hook(module: nn.Module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        patched = torch.where(where[..., None], clean.to(hidden.dtype), hidden)
        return (patched, *output[1:]) if isinstance(output, tuple) else patched

    return hook


def normalised_effect(patched: Float[Tensor, "... n"], clean: Float[Tensor, "n"],
                      corrupted: Float[Tensor, "n"]) -> Float[Tensor, "..."]:
    """How much of the clean behaviour a patch restores, from read-outs on ``n`` prompts:

        (mean(patched) − mean(corrupted)) / (mean(clean) − mean(corrupted)),

    means over the prompts (the last dimension), so that 0 = the corrupted run and 1 = the
    clean run. Averaging before dividing keeps a prompt whose clean and corrupted read-outs
    happen to be close from blowing up the ratio. Leading dimensions (layers, positions)
    are kept: [layers, positions, n] -> [layers, positions]. Raises ValueError when the clean
    and corrupted means are equal (there is nothing to restore).
    """
    restorable = clean.mean(-1) - corrupted.mean(-1)
    if restorable == 0:
        raise ValueError("the clean and corrupted read-outs have the same mean: there is nothing to restore")
    return (patched.mean(-1) - corrupted.mean(-1)) / restorable


def tokenise_same_length(texts: Sequence[str], tokenizer, device) -> dict:
    """The tokenizer's batch for ``texts``, on ``device``; every text must have the same number
    of tokens (no padding), so that position t means the same slot in every text."""
    batch = tokenizer(list(texts), return_tensors="pt", padding=True).to(device)
    if not batch["attention_mask"].all():
        raise ValueError("the texts must all tokenise to the same number of tokens")
    return batch


def readouts(texts: Sequence[str], readout: Callable, read_layer: int, model: nn.Module, tokenizer
             ) -> Float[Tensor, "n"]:
    """``readout`` of each text's mean-pooled residual stream at ``read_layer``, unedited."""
    batch = tokenizer(list(texts), return_tensors="pt", padding=True).to(next(model.parameters()).device)
    return readout(pooled_states(batch, read_layer, model))


def patched_readouts(source_texts: Sequence[str], target_texts: Sequence[str], readout: Callable,
                     layers: Sequence[int], read_layer: int, model: nn.Module, tokenizer,
                     positions: Sequence[int] | None = None) -> Float[Tensor, "layers positions n"]:
    """Activation patching of the residual stream, one (layer, position) at a time: run each
    target text with the hidden state of one token at one layer taken from the source text
    of the same index, and return ``readout`` of the pooled states at ``read_layer``.

    Sources and targets must tokenise to one common length. For each layer, one forward
    pass runs a copy of the target batch per position (all positions by default), copy j
    having token ``positions[j]`` patched: [positions · n] rows, copy-major.
    """
    device = next(model.parameters()).device
    source = tokenise_same_length(source_texts, tokenizer, device)
    target = tokenise_same_length(target_texts, tokenizer, device)
    if source["input_ids"].shape != target["input_ids"].shape:
        raise ValueError("source and target texts must tokenise to the same number of tokens")
    n, seq = target["input_ids"].shape
    positions = list(range(seq)) if positions is None else list(positions)
    source_states = token_activations(source_texts, layers, model, tokenizer, batch_size=n, progress=False)
    source_states = source_states.acts.view(n, seq, len(layers), -1)  # no padding: n × seq tokens
    copies = {key: value.repeat(len(positions), 1) for key, value in target.items()}
    where = F.one_hot(torch.tensor(positions), seq).bool().repeat_interleave(n, 0).to(device)
    results = []
    for i, layer in enumerate(tqdm(layers, desc="patching", leave=False)):
        hook = patch_hook(source_states[:, :, i].repeat(len(positions), 1, 1).to(device), where)
        pooled = pooled_states(copies, read_layer, model, [(layer, hook)])
        results.append(readout(pooled).view(len(positions), n))
    return torch.stack(results)


# --------------------------------------------------------------------------- steering


def add_vectors_hook(vectors: Float[Tensor, "batch d"]) -> Callable:
    """A forward hook that adds ``vectors[i]`` to every token of row i of the hidden states."""
    def hook(module: nn.Module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        steered = hidden + vectors[:, None].to(hidden.device, hidden.dtype)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook


def steered_readouts(texts: Sequence[str], vectors: Float[Tensor, "k n d"], layer: int, readout: Callable,
                     read_layer: int, model: nn.Module, tokenizer, batch_size: int = 512
                     ) -> Float[Tensor, "k n"]:
    """``readout`` of the pooled states at ``read_layer`` when ``vectors[j, i]`` is added to
    every token of text i at ``layer``, for each of the ``k`` settings j (directions ×
    strengths); all settings run as one long batch, ``batch_size`` rows per forward pass."""
    device = next(model.parameters()).device
    k, n, _ = vectors.shape
    tokens = tokenizer(list(texts), return_tensors="pt", padding=True).to(device)
    rows = {key: value.repeat(k, 1) for key, value in tokens.items()}
    flat = vectors.reshape(k * n, -1)
    readouts = []
    for start in tqdm(range(0, k * n, batch_size), desc="steering", leave=False):
        chunk = {key: value[start: start + batch_size] for key, value in rows.items()}
        hook = add_vectors_hook(flat[start: start + batch_size])
        readouts.append(readout(pooled_states(chunk, read_layer, model, [(layer, hook)])))
    return torch.cat(readouts).view(k, n)
