"""Chapter 3, toy models of superposition: reference solutions.

A toy model squeezes ``n_features`` sparse features through ``d_hidden < n_features``
dimensions and back: h = W x, x̂ = ReLU(Wᵀ h + b). Many independent instances train at
once, one per setting of a sweep (sparsity, importance), in one batch and one optimiser.

Shapes: weights ``W [inst, d_hidden, feats]`` (column i is feature i's embedding), biases
``b_final [inst, feats]``, a batch ``x [batch, inst, feats]``.
"""

from __future__ import annotations

import math
from typing import Callable

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm


def per_feature(value: float | Tensor, n_instances: int, n_features: int, name: str,
                 upper: float | None = None) -> Float[Tensor, "inst feats"]:
    """``value`` broadcast to ``[n_instances, n_features]``, or a ValueError saying what is wrong."""
    value = torch.as_tensor(value, dtype=torch.float32)
    try:
        expanded = value.expand(n_instances, n_features)
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}, which does not broadcast to [n_instances, "
            f"n_features] = [{n_instances}, {n_features}]; give a number, one value per instance "
            f"([{n_instances}, 1]), one per feature ([{n_features}]), or one per instance and feature"
        ) from None
    low, high = value.min().item(), value.max().item()
    if math.isnan(low) or math.isnan(high) or low < 0 or (upper is not None and high > upper):
        allowed = f"[0, {upper:g}]" if upper is not None else "[0, inf)"
        raise ValueError(f"{name} must lie in {allowed}; got values from {low:g} to {high:g}")
    return expanded


# --------------------------------------------------------------------------- data


def generate_sparse_features(batch_size: int, n_instances: int, n_features: int,
                             feature_probability: float | Tensor,
                             generator: torch.Generator | None = None
                             ) -> Float[Tensor, "batch inst feats"]:
    """A batch of sparse features: each entry is Uniform[0, 1) with probability p, else exactly 0.

    ``feature_probability`` p is a number, or a tensor that broadcasts to
    ``[n_instances, n_features]`` (``[n_instances, 1]``: one sparsity per instance). Sparsity
    is S = 1 - p. All randomness comes from ``generator``; the batch is made on its device.
    """
    p = per_feature(feature_probability, n_instances, n_features, "feature_probability", upper=1.0)
    device = generator.device if generator is not None else p.device
    shape = (batch_size, n_instances, n_features)
    fires = torch.rand(shape, generator=generator, device=device) < p.to(device)
    values = torch.rand(shape, generator=generator, device=device)
    return torch.where(fires, values, 0.0)


def generate_correlated_features(batch_size: int, n_instances: int, n_pairs: int,
                                 feature_probability: float | Tensor,
                                 generator: torch.Generator | None = None
                                 ) -> Float[Tensor, "batch inst feats"]:
    """Features in pairs (2k, 2k + 1) that fire together: both, with probability p, or neither.

    Each feature still fires with probability p and its value is its own Uniform[0, 1).
    p is a number or broadcasts to ``[n_instances, n_pairs]``. Returns ``[batch, inst, 2 * n_pairs]``.
    """
    p = per_feature(feature_probability, n_instances, n_pairs, "feature_probability", upper=1.0)
    device = generator.device if generator is not None else p.device
    pair_fires = torch.rand(batch_size, n_instances, n_pairs, generator=generator, device=device) < p.to(device)
    fires = pair_fires.repeat_interleave(2, dim=-1)
    values = torch.rand(fires.shape, generator=generator, device=device)
    return torch.where(fires, values, 0.0)


def generate_anticorrelated_features(batch_size: int, n_instances: int, n_pairs: int,
                                     feature_probability: float | Tensor,
                                     generator: torch.Generator | None = None
                                     ) -> Float[Tensor, "batch inst feats"]:
    """Features in pairs (2k, 2k + 1) that never fire together.

    A pair is active with probability 2p and then exactly one of its two features fires,
    each equally likely; so each feature still fires with probability p (p ≤ 1/2, a number or
    broadcasting to ``[n_instances, n_pairs]``). Returns ``[batch, inst, 2 * n_pairs]``.
    """
    p = per_feature(feature_probability, n_instances, n_pairs, "feature_probability", upper=0.5)
    device = generator.device if generator is not None else p.device
    shape = (batch_size, n_instances, n_pairs)
    pair_active = torch.rand(shape, generator=generator, device=device) < 2 * p.to(device)
    first = torch.rand(shape, generator=generator, device=device) < 0.5
    fires = torch.stack([pair_active & first, pair_active & ~first], dim=-1).flatten(-2)
    values = torch.rand(fires.shape, generator=generator, device=device)
    return torch.where(fires, values, 0.0)


# --------------------------------------------------------------------------- the model


class ToyModel(nn.Module):
    """``n_instances`` independent toy models: x̂ = ReLU(Wᵀ W x + b_final).

    Parameters ``W [n_instances, d_hidden, n_features]`` (Xavier-normal initialisation,
    drawn from ``generator``) and ``b_final [n_instances, n_features]`` (zeros). With
    ``relu=False`` the output is linear: x̂ = Wᵀ W x + b_final.
    """

    def __init__(self, n_features: int, d_hidden: int, n_instances: int = 1, relu: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.n_features, self.d_hidden, self.n_instances, self.relu = n_features, d_hidden, n_instances, relu
        std = math.sqrt(2 / (d_hidden + n_features))
        self.W = nn.Parameter(std * torch.randn(n_instances, d_hidden, n_features, generator=generator))
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def hidden(self, x: Float[Tensor, "batch inst feats"]) -> Float[Tensor, "batch inst d_hidden"]:
        """The hidden activations h = W x, per instance."""
        if x.ndim != 3 or x.shape[1:] != (self.n_instances, self.n_features):
            raise ValueError(f"expected a batch [batch, n_instances, n_features] = [batch, "
                             f"{self.n_instances}, {self.n_features}], got shape {tuple(x.shape)}")
        return einops.einsum(self.W, x, "inst hidden feats, batch inst feats -> batch inst hidden")

    def forward(self, x: Float[Tensor, "batch inst feats"]) -> Float[Tensor, "batch inst feats"]:
        """The reconstruction x̂ = ReLU(Wᵀ h + b_final) with h = W x (no ReLU if ``relu=False``)."""
        out = einops.einsum(self.W, self.hidden(x), "inst hidden feats, batch inst hidden -> batch inst feats")
        out = out + self.b_final
        return torch.relu(out) if self.relu else out


def importance_weighted_loss(x: Float[Tensor, "batch inst feats"], x_hat: Float[Tensor, "batch inst feats"],
                             importance: float | Tensor) -> Float[Tensor, "inst"]:
    """Per instance, the mean over batch and features of importance_i · (x_i - x̂_i)².

    ``importance`` is a number or broadcasts to ``[inst, feats]``. Training sums the result
    over instances, so that each instance gets exactly the gradient of its own loss.
    """
    if x.shape != x_hat.shape or x.ndim != 3:
        raise ValueError(f"x and x_hat must both be [batch, inst, feats]; got {tuple(x.shape)} "
                         f"and {tuple(x_hat.shape)}")
    weights = per_feature(importance, x.shape[1], x.shape[2], "importance").to(x.device)
    return einops.reduce(weights * (x - x_hat) ** 2, "batch inst feats -> inst", "mean")


# --------------------------------------------------------------------------- training


def cosine_decay_lr(step: int, steps: int) -> float:
    """The learning-rate multiplier: half a cosine, from 1 at step 0 down to 0 at the end."""
    return 0.5 * (1 + math.cos(math.pi * step / steps))


def constant_lr(step: int, steps: int) -> float:
    """The learning-rate multiplier 1 throughout."""
    return 1.0


def train_toy_models(model: ToyModel, feature_probability: float | Tensor, importance: float | Tensor = 1.0,
                     steps: int = 5_000, batch_size: int = 1024, lr: float = 1e-3,
                     lr_schedule: Callable[[int, int], float] = cosine_decay_lr, seed: int = 0,
                     progress: bool = True,
                     sampler: Callable[[int, torch.Generator], Tensor] | None = None) -> ToyModel:
    """Train every instance of ``model`` at once, in place, and return it.

    Each step draws a fresh batch (``generate_sparse_features`` with a generator seeded by
    ``seed``, on the model's device), and takes one Adam step on the sum over instances of
    ``importance_weighted_loss``; the learning rate is ``lr · lr_schedule(step, steps)``.
    Instances share nothing, so this is the same as training each one on its own.
    ``sampler(batch_size, generator)``, if given, draws the batches instead (then
    ``feature_probability`` is not used).
    """
    generator = torch.Generator(model.W.device).manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    bar = tqdm(range(steps), disable=not progress, desc="training", mininterval=0.5)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = lr * lr_schedule(step, steps)
        x = sampler(batch_size, generator) if sampler is not None else generate_sparse_features(
            batch_size, model.n_instances, model.n_features, feature_probability, generator)
        loss = importance_weighted_loss(x, model(x), importance).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if progress and (step % 100 == 0 or step == steps - 1):
            bar.set_postfix(loss_per_instance=f"{loss.item() / model.n_instances:.3g}")
    return model


# --------------------------------------------------------------------------- measuring


def dimensions_per_feature(W: Float[Tensor, "inst d_hidden feats"]) -> Float[Tensor, "inst"]:
    """D* = d_hidden / ‖W‖_F²: how many hidden dimensions each learned feature gets.

    A feature embedded with unit norm adds 1 to ‖W‖_F², so ‖W‖_F² counts features "learned";
    D* = 1 is one dimension per feature, 1/2 is two features per dimension.
    """
    return W.shape[1] / W.pow(2).sum(dim=(1, 2))


def feature_dimensionality(W: Float[Tensor, "inst d_hidden feats"], eps: float = 1e-8
                           ) -> Float[Tensor, "inst feats"]:
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²: the fraction of a dimension feature i has to itself.

    W_i is column i, Ŵ_i = W_i / ‖W_i‖; the sum runs over every j, i included (that term is
    ‖W_i‖²). 1 for a feature with its own dimension, 1/2 for an antipodal pair, 0 for a feature
    that is not represented (W_i = 0; the denominator is clamped at ``eps``).
    """
    norms = W.norm(dim=1)
    unit = W / norms[:, None, :].clamp(min=eps)
    overlaps = einops.einsum(unit, W, "inst hidden i, inst hidden j -> inst i j")
    return norms ** 2 / overlaps.pow(2).sum(dim=-1).clamp(min=eps)


def max_abs_cosine(V: Float[Tensor, "... n d"], eps: float = 1e-8) -> Float[Tensor, "..."]:
    """The worst interference among the rows of ``V``: max over i ≠ j of |cos(V_i, V_j)|.

    0 for a single row or for orthogonal rows; a zero row has cosine 0 with everything.
    For a toy model's features (the columns of W), pass ``W.transpose(-1, -2)``.
    """
    unit = V / V.norm(dim=-1, keepdim=True).clamp(min=eps)
    cosines = (unit @ unit.transpose(-1, -2)).abs()
    off_diagonal = cosines * (1 - torch.eye(V.shape[-2], device=V.device))
    return off_diagonal.amax(dim=(-1, -2))


def jl_interference_bound(n: int, d: int) -> float:
    """The Johnson–Lindenstrauss (union-bound) estimate of the interference of n vectors in d dims.

    A random unit vector has |cos| ≥ ε with a fixed one with probability at most
    2·exp(-d ε² / 2); over the n(n-1)/2 pairs, some random arrangement has every |cos| < ε
    once n(n-1)·exp(-d ε² / 2) ≤ 1, i.e. ε = sqrt(2 ln(n(n-1)) / d). An upper bound on the
    best possible max |cos|, and far from tight: for n ≤ d it is positive while the best is 0.
    """
    if n < 2:
        return 0.0
    return math.sqrt(2 * math.log(n * (n - 1)) / d)


def welch_bound(n: int, d: int) -> float:
    """The Welch bound: no n unit vectors in d dims have max |cos| below sqrt((n-d) / (d(n-1))).

    A lower bound, 0 when n ≤ d (orthogonal vectors fit), met by equiangular arrangements
    such as the simplex (n = d + 1, |cos| = 1/d).
    """
    if n <= d:
        return 0.0
    return math.sqrt((n - d) / (d * (n - 1)))


def optimise_packing(n: int, d: int, steps: int = 1_000, n_tries: int = 8, lr: float = 0.05,
                     sharpness: float = 40.0, seed: int = 0) -> Float[Tensor, "n d"]:
    """n unit vectors in d dims arranged to make max |cos| small, by gradient descent.

    ``n_tries`` random starts are optimised at once (Adam, cosine-decayed lr) on a smooth
    maximum of the squared cosines, logsumexp(sharpness · cos²) / sharpness; the start
    with the smallest max |cos| wins.
    """
    generator = torch.Generator().manual_seed(seed)
    V = torch.randn(n_tries, n, d, generator=generator).requires_grad_()
    optimiser = torch.optim.Adam([V], lr=lr)
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = lr * cosine_decay_lr(step, steps)
        unit = V / V.norm(dim=-1, keepdim=True)
        squared = (unit @ unit.transpose(-1, -2)).pow(2)[:, off_diagonal]
        loss = (torch.logsumexp(sharpness * squared, dim=-1) / sharpness).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        unit = V / V.norm(dim=-1, keepdim=True)
        return unit[max_abs_cosine(unit).argmin()]


# --------------------------------------------------------------------------- phases

PHASES = ("ignored", "dedicated", "superposed")


def classify_phase(W: Float[Tensor, "inst d_hidden feats"], feature: int = -1, represented: float = 0.5,
                   interference: float = 0.1) -> Int[Tensor, "inst"]:
    """How each instance treats one feature: 0 ignored, 1 dedicated, 2 superposed (see ``PHASES``).

    Ignored: ‖W_f‖ < ``represented``. Otherwise superposed when the other features'
    projections on its direction carry Σ_{j≠f} (Ŵ_f · W_j)² ≥ ``interference``, else
    dedicated (it has a direction of its own).
    """
    f = feature % W.shape[-1]
    norms = W.norm(dim=1)
    unit = W[:, :, f] / norms[:, f:f + 1].clamp(min=1e-8)
    overlaps = einops.einsum(unit, W, "inst hidden, inst hidden j -> inst j").pow(2)
    shared = overlaps.sum(-1) - overlaps[:, f]
    phase = torch.where(shared >= interference, 2, 1)
    return torch.where(norms[:, f] < represented, 0, phase)
