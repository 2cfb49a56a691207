"""Deliberately wrong implementations of chapter 2's exercises (each must fail a check),
and correct alternatives written differently from the reference (each must pass)."""

import torch
import torch.nn.functional as F

from solutions import probing as ref
from tests.mutants import Registry

mutants = Registry()
mutant, alternative = mutants.mutant, mutants.alternative


# --------------------------------------------------------------------------- mean_difference_direction

def _means(X, y):
    y = y.bool()
    return X[y].mean(0), X[~y].mean(0)


@mutant("mean_difference_direction", "not normalised to unit norm")
def _(X, y):
    one, zero = _means(X, y)
    return one - zero


@mutant("mean_difference_direction", "sign flipped (class 0 minus class 1)")
def _(X, y):
    one, zero = _means(X, y)
    return (zero - one) / (zero - one).norm()


@mutant("mean_difference_direction", "sums instead of means")
def _(X, y):
    y = y.bool()
    difference = X[y].sum(0) - X[~y].sum(0)
    return difference / difference.norm()


@mutant("mean_difference_direction", "labels used as indices (X[y] with integer y)")
def _(X, y):
    one, zero = X[y.long() == 1].mean(0), X[y.long()].mean(0)
    return (one - zero) / (one - zero).norm()


@alternative("mean_difference_direction", "class 1 minus the overall mean (parallel to μ₁ − μ₀)")
def _(X, y):
    difference = X[y.bool()].mean(0) - X.mean(0)
    return F.normalize(difference, dim=0)


@alternative("mean_difference_direction", "weighted means via matrix products")
def _(X, y):
    weights = y.float()
    difference = weights @ X / weights.sum() - (1 - weights) @ X / (1 - weights).sum()
    return difference / torch.linalg.vector_norm(difference)


# --------------------------------------------------------------------------- project_out

@mutant("project_out", "assumes a unit direction")
def _(X, direction):
    return X - (X @ direction)[..., None] * direction


@mutant("project_out", "divides by the norm once only")
def _(X, direction):
    return X - (X @ direction)[..., None] * direction / direction.norm()


@mutant("project_out", "only works on [n, d] (outer product with a 2-D matmul)")
def _(X, direction):
    unit = direction / direction.norm()
    return X - (X @ unit[:, None]) @ unit[None, :] if X.ndim == 2 else X.reshape(-1)[: 0]


@mutant("project_out", "subtracts in place")
def _(X, direction):
    unit = direction / direction.norm()
    X -= (X @ unit)[..., None] * unit
    return X


@alternative("project_out", "projection matrix I − ûûᵀ")
def _(X, direction):
    unit = direction / direction.norm()
    return X @ (torch.eye(len(unit)) - torch.outer(unit, unit))


@alternative("project_out", "dividing by uᵀu instead of normalising")
def _(X, direction):
    return X - (X @ direction / (direction @ direction))[..., None] * direction


# --------------------------------------------------------------------------- logistic probes

def _logistic(X, y, weight_decay=1e-3, steps=300, lr=1e-2, reduction="mean", decay_bias=False,
              bias=True, target_sign=1):
    target = y.float() if target_sign == 1 else 1 - y.float()
    inst, _, d = X.shape
    w = torch.zeros(inst, d, requires_grad=True)
    b = torch.zeros(inst, requires_grad=bias)
    optimizer = torch.optim.Adam([w, b] if bias else [w], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = X @ w[:, :, None] + b[:, None, None]
            bce = F.binary_cross_entropy_with_logits(logits[..., 0], target.expand(inst, -1), reduction="none")
            bce = bce.mean(-1) if reduction == "mean" else bce.sum(-1)
            penalty = weight_decay * (w.pow(2).sum(-1) + (b.pow(2) if decay_bias else 0))
            optimizer.zero_grad()
            (bce + penalty).sum().backward()
            optimizer.step()
    return w.detach(), b.detach()


@mutant("train_logistic_probes", "sums the cross-entropy over examples")
def _(X, y, weight_decay=1e-3, steps=300, lr=1e-2):
    return _logistic(X, y, weight_decay, steps, lr, reduction="sum")


@mutant("train_logistic_probes", "weight decay on the bias too")
def _(X, y, weight_decay=1e-3, steps=300, lr=1e-2):
    return _logistic(X, y, weight_decay, steps, lr, decay_bias=True)


@mutant("train_logistic_probes", "no bias")
def _(X, y, weight_decay=1e-3, steps=300, lr=1e-2):
    return _logistic(X, y, weight_decay, steps, lr, bias=False)


@mutant("train_logistic_probes", "labels inverted")
def _(X, y, weight_decay=1e-3, steps=300, lr=1e-2):
    return _logistic(X, y, weight_decay, steps, lr, target_sign=-1)


@mutant("train_logistic_probes", "one probe shared by all instances")
def _(X, y, weight_decay=1e-3, steps=300, lr=1e-2):
    w, b = _logistic(X.mean(0, keepdim=True), y, weight_decay, steps, lr)
    return w.expand(X.shape[0], -1), b.expand(X.shape[0])


@alternative("train_logistic_probes", "parameters in one tensor, loss averaged over instances")
def _(X, y, weight_decay=1e-3, steps=300, lr=1e-2):
    inst, n, d = X.shape
    params = torch.zeros(inst, d + 1, requires_grad=True)
    optimizer = torch.optim.Adam([params], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.einsum("ind,id->in", X, params[:, :d]) + params[:, d:]
            loss = F.binary_cross_entropy_with_logits(logits, y.float().repeat(inst, 1))
            loss = loss + weight_decay * params[:, :d].pow(2).sum() / inst
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return params[:, :d].detach(), params[:, d].detach()


# --------------------------------------------------------------------------- LEACE

def _leace(X, y, whiten=True, centre=True):
    X64 = X.double()
    mean = X64.mean(0) if centre else torch.zeros(X.shape[1], dtype=torch.float64)
    centred = X64 - mean
    z = y.double()
    sigma = centred.T @ centred / len(X)
    cross = centred.T @ (z - z.mean()) / len(X)
    if whiten:
        L, V = torch.linalg.eigh(sigma)
        keep = L > L.max() * len(L) * torch.finfo(torch.float64).eps
        W = V @ torch.diag(torch.where(keep, L.clamp(min=0).rsqrt(), 0.0)) @ V.T
        W_inv = V @ torch.diag(torch.where(keep, L.clamp(min=0).sqrt(), 0.0)) @ V.T
    else:
        W = W_inv = torch.eye(len(cross), dtype=torch.float64)
    u = W @ cross
    u = u / u.norm()
    return mean.float(), (W_inv @ u).float(), (W @ u).float()


@mutant("leace_fit", "no whitening (an orthogonal projection along Cov(X, y))")
def _(X, y):
    return _leace(X, y, whiten=False)


@mutant("leace_fit", "no centring (second moments instead of covariances)")
def _(X, y):
    return _leace(X, y, centre=False)


@mutant("leace_fit", "left and right swapped")
def _(X, y):
    mean, left, right = _leace(X, y)
    return mean, right, left


@mutant("leace_fit", "whitens with Σ⁻¹ instead of Σ^(-1/2)")
def _(X, y):
    mean = X.double().mean(0)
    centred = X.double() - mean
    z = y.double()
    sigma = centred.T @ centred / len(X)
    cross = centred.T @ (z - z.mean()) / len(X)
    u = torch.linalg.pinv(sigma, hermitian=True) @ cross
    u = u / u.norm()
    return mean.float(), (sigma @ u).float(), (torch.linalg.pinv(sigma, hermitian=True) @ u).float()


@alternative("leace_fit", "whitening from the pseudo-inverse of Σ, another eigenvalue cut-off")
def _(X, y):
    X64, z = X.double(), y.double()
    mean = X64.mean(0)
    centred = X64 - mean
    sigma = torch.cov(centred.T, correction=0)
    cross = centred.T @ (z - z.mean()) / len(X)
    L, V = torch.linalg.eigh(sigma)
    root = (V * torch.where(L > 1e-10 * L.max(), L, 0.0).sqrt()) @ V.T
    W = torch.linalg.pinv(root, hermitian=True, rtol=1e-6)
    u = F.normalize(W @ cross, dim=0)
    return mean.float(), (root @ u).float(), (W @ u).float()


@mutant("leace_erase", "no whitening (orthogonal projection of the centred data)")
def _(X, y):
    mean, left, right = _leace(X, y, whiten=False)
    return X - ((X - mean) @ right)[:, None] * left


@mutant("leace_erase", "no centring before projecting")
def _(X, y):
    mean, left, right = ref.leace_fit(X, y)
    return X - (X @ right)[:, None] * left


@mutant("leace_erase", "project_out along the mean difference (no whitening, no centring)")
def _(X, y):
    return ref.project_out(X, ref.mean_difference_direction(X, y))


@alternative("leace_erase", "the full projection matrix P = I − left rightᵀ, plus a bias")
def _(X, y):
    mean, left, right = ref.leace_fit(X, y)
    P = torch.eye(X.shape[1]) - torch.outer(left, right)
    return (X - mean) @ P.T + mean


# --------------------------------------------------------------------------- CCS

@mutant("ccs_loss", "max instead of min in the confidence term")
def _(p_pos, p_neg):
    return torch.maximum(p_pos, p_neg).pow(2).mean(-1) + (p_pos - (1 - p_neg)).pow(2).mean(-1)


@mutant("ccs_loss", "consistency term (p⁺ − p⁻)²")
def _(p_pos, p_neg):
    return torch.minimum(p_pos, p_neg).pow(2).mean(-1) + (p_pos - p_neg).pow(2).mean(-1)


@mutant("ccs_loss", "sums over examples instead of averaging")
def _(p_pos, p_neg):
    return torch.minimum(p_pos, p_neg).pow(2).sum(-1) + (p_pos - (1 - p_neg)).pow(2).sum(-1)


@mutant("ccs_loss", "averages over every dimension (loses the restarts)")
def _(p_pos, p_neg):
    return torch.minimum(p_pos, p_neg).pow(2).mean() + (p_pos - (1 - p_neg)).pow(2).mean()


@mutant("ccs_loss", "confidence term not squared")
def _(p_pos, p_neg):
    return torch.minimum(p_pos, p_neg).mean(-1) + (p_pos - (1 - p_neg)).pow(2).mean(-1)


@alternative("ccs_loss", "min of the squares (the same for probabilities)")
def _(p_pos, p_neg):
    stacked = torch.stack([p_pos, p_neg]) ** 2
    return stacked.min(0).values.mean(-1) + ((p_pos + p_neg - 1) ** 2).mean(-1)


# --------------------------------------------------------------------------- the hook

@mutant("erase_direction_hook", "assumes a unit direction")
def _(direction):
    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        erased = hidden - (hidden @ direction)[..., None] * direction
        return (erased, *output[1:]) if isinstance(output, tuple) else erased
    return hook


@mutant("erase_direction_hook", "returns nothing (the output is unchanged)")
def _(direction):
    def hook(module, inputs, output):
        ref.project_out(output[0] if isinstance(output, tuple) else output, direction)
    return hook


@mutant("erase_direction_hook", "drops the rest of a tuple output")
def _(direction):
    def hook(module, inputs, output):
        return ref.project_out(output[0] if isinstance(output, tuple) else output, direction)
    return hook


@mutant("erase_direction_hook", "erases the module's input instead of its output")
def _(direction):
    def hook(module, inputs, output):
        return module(ref.project_out(inputs[0], direction)) if not isinstance(output, tuple) else output
    return hook


@alternative("erase_direction_hook", "modifies the output in place and returns None")
def _(direction):
    unit = direction / direction.norm()

    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        along = unit.to(hidden.device, hidden.dtype)
        hidden.sub_((hidden @ along)[..., None] * along)
    return hook


@mutant("erase_direction_hook", "does not cast the direction to the hidden states' dtype")
def _(direction):
    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        erased = ref.project_out(hidden, direction)
        return (erased, *output[1:]) if isinstance(output, tuple) else erased
    return hook


# --------------------------------------------------------------------------- activation patching

def _patching(patch):
    """A patch hook built from ``patch(hidden, clean, where) -> new hidden``."""
    def make(clean, where):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            patched = patch(hidden, clean.to(hidden.dtype), where)
            return (patched, *output[1:]) if isinstance(output, tuple) else patched
        return hook
    return make


mutant("patch_hook", "the mask inverted (patches every token but the marked ones)")(
    _patching(lambda hidden, clean, where: torch.where(where[..., None], hidden, clean)))
mutant("patch_hook", "patches the whole row when any of its tokens is marked")(
    _patching(lambda hidden, clean, where: torch.where(where.any(-1)[:, None, None], clean, hidden)))
mutant("patch_hook", "uses the first row's mask for every row")(
    _patching(lambda hidden, clean, where: torch.where(where[:1, :, None], clean, hidden)))
mutant("patch_hook", "the mask not broadcast over the features")(
    _patching(lambda hidden, clean, where: torch.where(where, clean, hidden)))


@mutant("patch_hook", "computes the patched tensor but returns nothing")
def _(clean, where):
    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        torch.where(where[..., None], clean.to(hidden.dtype), hidden)
    return hook


@mutant("patch_hook", "drops the rest of a tuple output")
def _(clean, where):
    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        return torch.where(where[..., None], clean.to(hidden.dtype), hidden)
    return hook


@mutant("patch_hook", "does not cast clean to the output's dtype")
def _(clean, where):
    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        patched = torch.where(where[..., None], clean, hidden)
        return (patched, *output[1:]) if isinstance(output, tuple) else patched
    return hook


@alternative("patch_hook", "writes the marked tokens into the output in place and returns None")
def _(clean, where):
    def hook(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[where] = clean[where].to(hidden.dtype)
    return hook


alternative("patch_hook", "blends with a 0/1 mask: hidden + mask · (clean − hidden)")(
    _patching(lambda hidden, clean, where: hidden + where[..., None].to(hidden.dtype) * (clean - hidden)))


@mutant("normalised_effect", "normalises each prompt, then averages the ratios")
def _(patched, clean, corrupted):
    return ((patched - corrupted) / (clean - corrupted)).mean(-1)


@mutant("normalised_effect", "clean and corrupted swapped (1 = corrupted)")
def _(patched, clean, corrupted):
    return (patched.mean(-1) - clean.mean(-1)) / (corrupted.mean(-1) - clean.mean(-1))


@mutant("normalised_effect", "not normalised: mean(patched) − mean(corrupted)")
def _(patched, clean, corrupted):
    return patched.mean(-1) - corrupted.mean(-1)


@mutant("normalised_effect", "divides by the clean mean instead of the clean-minus-corrupted gap")
def _(patched, clean, corrupted):
    return (patched.mean(-1) - corrupted.mean(-1)) / clean.mean(-1)


@mutant("normalised_effect", "absolute values (a patch that makes things worse counts as restoring)")
def _(patched, clean, corrupted):
    return (patched.mean(-1) - corrupted.mean(-1)).abs() / (clean.mean(-1) - corrupted.mean(-1)).abs()


@mutant("normalised_effect", "means over every dimension")
def _(patched, clean, corrupted):
    return (patched.mean() - corrupted.mean()) / (clean.mean() - corrupted.mean())


@mutant("normalised_effect", "means over the first dimension")
def _(patched, clean, corrupted):
    return (patched.mean(0) - corrupted.mean(0)) / (clean.mean(0) - corrupted.mean(0))


@mutant("normalised_effect", "divides by a zero gap (returns inf or nan instead of raising)")
def _(patched, clean, corrupted):
    return (patched.mean(-1) - corrupted.mean(-1)) / (clean.mean(-1) - corrupted.mean(-1))


@alternative("normalised_effect", "ratio of sums (the same as the ratio of means)")
def _(patched, clean, corrupted):
    gap = (clean - corrupted).sum(-1)
    if gap == 0:
        raise ValueError("clean and corrupted agree on average: nothing to restore")
    return (patched - corrupted).sum(-1) / gap


@alternative("normalised_effect", "torch.lerp-style: restored fraction of the gap, via torch.div")
def _(patched, clean, corrupted):
    base = corrupted.mean()
    if torch.isclose(clean.mean(), base, rtol=0, atol=0):
        raise ValueError("nothing to restore")
    return torch.div(patched.mean(dim=-1) - base, clean.mean() - base)
