"""Hidden checks for chapter 2, linear probing and ablation.

Each case builds small inputs from its seed, calls the implementation under test, and
returns plain data; see ``utils.checks``. Inputs are chosen so that each plausible mistake
changes the answer: unbalanced classes (means vs sums), data far from the origin (centring),
anisotropic covariances (whitening), directions that are not unit vectors, probabilities
with a leading restarts dimension, hook outputs in another dtype than the tensors handed in,
patch masks that differ from row to row, and read-outs with a prompt whose clean and corrupted
values almost coincide.

A forward pass with the student's hook registered runs in the student's process, through
the public helper ``utils.student_side.hooked_forward``; the cases themselves run in the
grader's.
"""

import torch

from utils.checks import Mismatch, Suite, beyond
from utils.student_side import hooked_forward

suite = Suite("probing")


def _labelled(seed: int, n: int = 20, d: int = 5, n_one: int = 7, offset: float = 3.0):
    """Anisotropic, off-centre data with unbalanced classes that differ in mean."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(n, dtype=torch.long)
    y[torch.randperm(n, generator=g)[:n_one]] = 1
    mixing = torch.randn(d, d, generator=g) * torch.linspace(0.3, 3.0, d)
    X = torch.randn(n, d, generator=g) @ mixing + offset * torch.randn(d, generator=g)
    X = X + y[:, None] * torch.randn(d, generator=g)
    return X, y


def _unit_norm(result) -> Mismatch | None:
    return beyond(result.norm().item(), 1.0, 1e-4, "the direction does not have unit norm")


def _class_means_equal(result) -> Mismatch | None:
    erased, y = result["erased"], result["y"].bool()
    gap = (erased[y].mean(0) - erased[~y].mean(0)).abs().max().item()
    scale = erased.abs().max().item()
    return beyond(gap, 0.0, 1e-3 * max(scale, 1.0),
                  f"after erasure the two class means still differ (by up to {gap:.3g})")


# --------------------------------------------------------------------------- mean_difference_direction


@suite.case("mean_difference_direction", "unit vector from class 0 towards class 1, unbalanced classes",
            "normalise μ₁ − μ₀ to unit length, keep its sign (class 1 minus class 0), and use the "
            "class means, not sums (the classes have different sizes)", judges=[_unit_norm])
def _(impl, seed):
    X, y = _labelled(seed)
    return impl.mean_difference_direction(X, y)


@suite.case("mean_difference_direction", "boolean and float labels",
            "accept labels as a bool, integer or float tensor of 0s and 1s (y.bool() selects class 1)")
def _(impl, seed):
    X, y = _labelled(seed + 1, n=16, n_one=5)
    return impl.mean_difference_direction(X, y.bool()), impl.mean_difference_direction(X, y.float())


# --------------------------------------------------------------------------- project_out


def _orthogonal(result) -> Mismatch | None:
    erased, direction = result
    along = (erased @ direction).abs().max().item()
    tolerance = 1e-4 * direction.norm().item() * max(erased.abs().max().item(), 1.0)
    return beyond(along, 0.0, tolerance, "the result still has a component along the direction")


@suite.case("project_out", "a direction that is not unit norm",
            "divide the direction by its norm first: X − (X·û)û with û = u/‖u‖ (X·u u only works "
            "for a unit u)", judges=[_orthogonal])
def _(impl, seed):
    X, _ = _labelled(seed)
    direction = 3.7 * torch.randn(X.shape[1], generator=torch.Generator().manual_seed(seed + 5))
    return impl.project_out(X, direction), direction


@suite.case("project_out", "rows of any leading shape [..., d]",
            "project along the last dimension: (X @ û)[..., None] * û works for any leading shape")
def _(impl, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(2, 3, 4, generator=g)
    direction = torch.randn(4, generator=g) * 0.2
    return impl.project_out(X, direction)


@suite.case("project_out", "the input is left unchanged",
            "compute a new tensor (X - ...), don't subtract in place (X -= ...)")
def _(impl, seed):
    X, _ = _labelled(seed, n=6, d=3)
    before = X.clone()
    impl.project_out(X, torch.tensor([1.0, 2.0, -1.0]))
    return X - before


# --------------------------------------------------------------------------- logistic probes


@suite.case("train_logistic_probes", "two instances, a few steps of Adam",
            "start from w = 0, b = 0; loss per instance = mean BCE over examples (not the sum) + "
            "weight_decay·‖w‖² (not on b); sum the instances' losses; one Adam step per iteration",
            rtol=2e-3, atol=2e-4)
def _(impl, seed):
    X, y = _labelled(seed, n=24, d=4, n_one=10, offset=0.5)
    X2 = torch.stack([X, X.flip(-1) * 0.5])
    w, b = impl.train_logistic_probes(X2, y, weight_decay=0.05, steps=20, lr=0.05)
    return w, b


@suite.case("train_logistic_probes", "each instance trains as if alone",
            "don't average or share anything across instances: each has its own w_i, b_i and loss",
            rtol=2e-3, atol=2e-4)
def _(impl, seed):
    X, y = _labelled(seed + 2, n=24, d=4, n_one=9, offset=0.5)
    alone = impl.train_logistic_probes(X[None], y, weight_decay=0.01, steps=15, lr=0.05)
    together = impl.train_logistic_probes(torch.stack([X, 2 * X, -X]), y, weight_decay=0.01,
                                          steps=15, lr=0.05)
    return alone[0][0], alone[1][0], together[0][0], together[1][0]


# --------------------------------------------------------------------------- LEACE


def _leace_fit_program(impl, seed, n, d):
    X, y = _labelled(seed, n=n, d=d, n_one=n // 3)
    mean, left, right = impl.leace_fit(X, y)
    erased = X - ((X - mean) @ right)[:, None] * left
    return {"mean": mean, "P": torch.outer(left, right), "erased": erased, "y": y}


@suite.case("leace_fit", "anisotropic, off-centre data",
            "centre X before the covariances; whiten with W = Σ^(-1/2) (eigh of Σ, 1/√λ); "
            "u = Wσ/‖Wσ‖; left = W⁺u, right = Wu", judges=[_class_means_equal], rtol=1e-3, atol=1e-4)
def _(impl, seed):
    return _leace_fit_program(impl, seed, n=40, d=5)


@suite.case("leace_fit", "fewer examples than dimensions (a singular covariance)",
            "Σ has zero eigenvalues here: use a pseudo-inverse square root, treating eigenvalues "
            "below max·d·eps as zero (compute in float64)", judges=[_class_means_equal],
            rtol=1e-3, atol=1e-4)
def _(impl, seed):
    return _leace_fit_program(impl, seed + 3, n=6, d=9)


@suite.case("leace_erase", "class means are equal afterwards, the change is LEACE's",
            "x' = x − ((x − μ)·right)·left with (μ, left, right) from leace_fit(X, y): subtract the "
            "mean before projecting, and use the whitened (oblique) projection, not an orthogonal one",
            judges=[_class_means_equal], rtol=1e-3, atol=1e-4)
def _(impl, seed):
    X, y = _labelled(seed, n=30, d=4, n_one=11)
    return {"erased": impl.leace_erase(X, y), "y": y}


# --------------------------------------------------------------------------- CCS


def _probabilities(seed: int, *shape):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g), torch.rand(*shape, generator=g)


@suite.case("ccs_loss", "one probe's probabilities",
            "confidence = mean(min(p⁺, p⁻)²) (min, not max); consistency = mean((p⁺ − (1 − p⁻))²); "
            "means over examples, not sums")
def _(impl, seed):
    return impl.ccs_loss(*_probabilities(seed, 12))


@suite.case("ccs_loss", "a leading restarts dimension is kept",
            "average over the last dimension only (.mean(-1)): [restarts, n] -> [restarts]")
def _(impl, seed):
    return impl.ccs_loss(*_probabilities(seed + 1, 3, 8))


@suite.case("ccs_loss", "a perfectly consistent, confident probe scores 0",
            "p⁺ = 1 − p⁻ with one of them 0 must give a loss of exactly 0")
def _(impl, seed):
    p_pos = (torch.rand(10, generator=torch.Generator().manual_seed(seed)) > 0.5).float()
    return impl.ccs_loss(p_pos, 1 - p_pos)


# --------------------------------------------------------------------------- the hooks' dtype


def _float32(result) -> Mismatch | None:
    hidden = result[0] if isinstance(result, tuple) else result
    if hidden.dtype != torch.float32:
        return Mismatch(f"the hidden states came back as {hidden.dtype}, not the block's float32: cast "
                        "what you put in to the output's dtype", form=True)
    return None


# --------------------------------------------------------------------------- the erasure hook


@suite.case("erase_direction_hook", "a block that returns a tensor; direction not unit norm",
            "the hook must return the new output: project_out(output, direction) with the direction "
            "normalised",
            changes_arguments=True)  # a forward hook may change the output in place instead
def _(impl, seed):
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(seed + 1))
    direction = 2.5 * torch.randn(5, generator=torch.Generator().manual_seed(seed + 2))
    return hooked_forward(impl.erase_direction_hook(direction), x, seed, tuple_output=False)


@suite.case("erase_direction_hook", "a block that returns a tuple (hidden, ...)",
            "when the output is a tuple, erase its first element and return a tuple of the same length",
            changes_arguments=True)
def _(impl, seed):
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed + 4))
    direction = torch.randn(5, generator=torch.Generator().manual_seed(seed + 5))
    return hooked_forward(impl.erase_direction_hook(direction), x, seed + 3, tuple_output=True)


@suite.case("erase_direction_hook", "a float64 direction on a float32 block",
            "move the direction to the hidden states' device and dtype before projecting "
            "(direction.to(hidden.device, hidden.dtype))", judges=[_float32])
def _(impl, seed):
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(seed + 6))
    direction = torch.randn(5, generator=torch.Generator().manual_seed(seed + 7)).double()
    return hooked_forward(impl.erase_direction_hook(direction), x, seed + 8, tuple_output=False)


# --------------------------------------------------------------------------- activation patching


def _patch_inputs(seed: int, batch: int = 3, seq: int = 5, d: int = 4):
    """Hidden states to patch in, and a mask that differs from row to row: one marked token in
    row 0, none in row 1, two in row 2 (and so on cyclically)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, d, generator=g)
    clean = 10 + torch.randn(batch, seq, d, generator=g)  # far from any output of the block
    where = torch.zeros(batch, seq, dtype=torch.bool)
    for row in range(batch):
        where[row, torch.randperm(seq, generator=g)[: (1, 0, 2)[row % 3]]] = True
    return x, clean, where


@suite.case("patch_hook", "exactly the marked tokens of each row are patched",
            "torch.where(where[..., None], clean, hidden): the mask is per row and per token (not "
            "where[0] for every row, not the whole row), clean goes where the mask is True, and the "
            "hook must return the new tensor")
def _(impl, seed):
    x, clean, where = _patch_inputs(seed)
    return hooked_forward(impl.patch_hook(clean, where), x, seed + 1, tuple_output=False)


@suite.case("patch_hook", "a block that returns a tuple (hidden, ...)",
            "when the output is a tuple, patch its first element and return a tuple of the same length")
def _(impl, seed):
    x, clean, where = _patch_inputs(seed + 2, batch=4)
    return hooked_forward(impl.patch_hook(clean, where), x, seed + 3, tuple_output=True)


@suite.case("patch_hook", "clean states in float64, the block in float32",
            "cast clean to the output's dtype (clean.to(hidden.dtype)): the next layer expects its "
            "own dtype", judges=[_float32])
def _(impl, seed):
    x, clean, where = _patch_inputs(seed + 4)
    return hooked_forward(impl.patch_hook(clean.double(), where), x, seed + 5, tuple_output=False)


def _readouts(seed: int, shape: tuple[int, ...], n: int = 6):
    """Read-outs of n prompts: the clean and corrupted means differ by several units, one prompt's
    clean and corrupted values almost coincide, and some patched values fall below corrupted."""
    g = torch.Generator().manual_seed(seed)
    corrupted = torch.randn(n, generator=g)
    clean = corrupted + 3 + 2 * torch.rand(n, generator=g)
    clean[2] = corrupted[2] + 1e-3
    patched = corrupted + 6 * torch.rand(*shape, n, generator=g) - 2.5
    return patched, clean, corrupted


@suite.case("normalised_effect", "read-outs [layers, positions, n]",
            "(mean(patched) − mean(corrupted)) / (mean(clean) − mean(corrupted)) with means over the "
            "last dimension (the prompts), taken before dividing; keep the sign (no absolute values)")
def _(impl, seed):
    return impl.normalised_effect(*_readouts(seed, (3, 4)))


@suite.case("normalised_effect", "clean gives 1, corrupted 0, halfway ½",
            "0 must mean 'as corrupted' and 1 'as clean': subtract the corrupted mean, divide by the "
            "clean-minus-corrupted gap")
def _(impl, seed):
    _, clean, corrupted = _readouts(seed + 1, ())
    return impl.normalised_effect(torch.stack([clean, corrupted, (clean + corrupted) / 2]), clean, corrupted)


@suite.case("normalised_effect", "one vector of read-outs [n] gives one number",
            "reduce over the last dimension only: [n] -> []")
def _(impl, seed):
    return impl.normalised_effect(*_readouts(seed + 2, ()))


@suite.case("normalised_effect", "equal clean and corrupted means raise ValueError",
            "when mean(clean) == mean(corrupted) there is nothing to restore: raise ValueError with a "
            "message instead of returning inf or nan")
def _(impl, seed):
    patched, _, corrupted = _readouts(seed + 3, (2,))
    try:
        impl.normalised_effect(patched, corrupted.clone(), corrupted)
    except ValueError as exc:
        return "ValueError" if str(exc).strip() else "ValueError without a message"
    return "no error"


test_hidden_check = suite.pytest_function()
