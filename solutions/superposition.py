"""Chapter 3, toy models of superposition: reference solutions.

A toy model squeezes ``n_features`` sparse features through ``d_hidden < n_features``
dimensions and back: h = W x, x̂ = ReLU(Wᵀ h + b). Many independent instances train at
once, one per setting of a sweep (sparsity, importance, seed), in one batch and one optimiser.

Shapes: weights ``W [inst, d_hidden, feats]`` (column i is feature i's embedding), biases
``b_final [inst, feats]``, a batch ``x [batch, inst, feats]``.

Devices: random numbers are drawn from a CPU ``torch.Generator`` and only then moved to the
model's device, so a seed gives the same batches, weights and results on a CPU and a GPU.
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
    """``value`` broadcast to ``[n_instances, n_features]``, or a ValueError saying what is wrong.

    The result is on ``value``'s device (the CPU for a number): move it to where it is used.
    """
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


def uniform(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform[0, 1) numbers drawn where ``generator`` lives (the CPU without one).

    Drawing on the generator's own device is what makes a seed mean the same numbers
    everywhere: a CPU generator gives the same stream on every machine, whichever device
    the batch is then moved to.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=device)


def generate_sparse_features(batch_size: int, n_instances: int, n_features: int,
                             feature_probability: float | Tensor,
                             generator: torch.Generator | None = None,
                             device: torch.device | str | None = None
                             ) -> Float[Tensor, "batch inst feats"]:
    """A batch of sparse features: each entry is Uniform[0, 1) with probability p, else exactly 0.

    ``feature_probability`` p is a number, or a tensor that broadcasts to
    ``[n_instances, n_features]`` (``[n_instances, 1]``: one sparsity per instance). Sparsity
    is S = 1 - p. Two independent draws per entry, both from ``generator``: one decides
    whether it fires, the other is its value. The numbers are drawn where the generator is
    (the CPU without one) and the batch is then moved to ``device`` (default: left there).
    """
    p = per_feature(feature_probability, n_instances, n_features, "feature_probability", upper=1.0)
    shape = (batch_size, n_instances, n_features)
    draw = uniform(shape, generator)
    values = uniform(shape, generator)
    return torch.where(draw < p.to(draw.device), values, 0.0).to(device or draw.device)


def generate_signed_sparse_features(batch_size: int, n_instances: int, n_features: int,
                                    feature_probability: float | Tensor,
                                    generator: torch.Generator | None = None,
                                    device: torch.device | str | None = None
                                    ) -> Float[Tensor, "batch inst feats"]:
    """Like ``generate_sparse_features``, but an active feature is Uniform(-1, 1): it has a sign.

    The batch of ``generate_sparse_features`` (same generator, same draws), then a third draw
    per entry gives each value a sign, + or - with probability 1/2.
    """
    x = generate_sparse_features(batch_size, n_instances, n_features, feature_probability, generator)
    sign = torch.where(uniform(x.shape, generator) < 0.5, 1.0, -1.0)
    return (x * sign).to(device or x.device)


def generate_correlated_features(batch_size: int, n_instances: int, n_pairs: int,
                                 feature_probability: float | Tensor,
                                 generator: torch.Generator | None = None,
                                 device: torch.device | str | None = None
                                 ) -> Float[Tensor, "batch inst feats"]:
    """Features in pairs (2k, 2k + 1) that fire together: both, with probability p, or neither.

    Each feature still fires with probability p and its value is its own Uniform[0, 1).
    p is a number or broadcasts to ``[n_instances, n_pairs]``. Returns ``[batch, inst, 2 * n_pairs]``,
    drawn where ``generator`` is and moved to ``device`` (as ``generate_sparse_features``).
    """
    p = per_feature(feature_probability, n_instances, n_pairs, "feature_probability", upper=1.0)
    pair_draw = uniform((batch_size, n_instances, n_pairs), generator)
    fires = (pair_draw < p.to(pair_draw.device)).repeat_interleave(2, dim=-1)
    values = uniform(fires.shape, generator)
    return torch.where(fires, values, 0.0).to(device or values.device)


def generate_anticorrelated_features(batch_size: int, n_instances: int, n_pairs: int,
                                     feature_probability: float | Tensor,
                                     generator: torch.Generator | None = None,
                                     device: torch.device | str | None = None
                                     ) -> Float[Tensor, "batch inst feats"]:
    """Features in pairs (2k, 2k + 1) that never fire together.

    A pair is active with probability 2p and then exactly one of its two features fires,
    each equally likely, on a coin of its own (one per batch row, instance and pair); so each
    feature still fires with probability p (p ≤ 1/2, a number or broadcasting to
    ``[n_instances, n_pairs]``). Returns ``[batch, inst, 2 * n_pairs]``, drawn where
    ``generator`` is and moved to ``device``.
    """
    p = per_feature(feature_probability, n_instances, n_pairs, "feature_probability", upper=0.5)
    shape = (batch_size, n_instances, n_pairs)
    pair_draw = uniform(shape, generator)
    pair_active = pair_draw < 2 * p.to(pair_draw.device)
    first = uniform(shape, generator) < 0.5
    fires = torch.stack([pair_active & first, pair_active & ~first], dim=-1).flatten(-2)
    values = uniform(fires.shape, generator)
    return torch.where(fires, values, 0.0).to(device or values.device)


# --------------------------------------------------------------------------- the models


def xavier_normal(shape: tuple[int, ...], fan_in: int, fan_out: int,
                  generator: torch.Generator | None) -> Tensor:
    """N(0, σ²) entries with σ = sqrt(2 / (fan_in + fan_out)), drawn on the CPU from ``generator``.

    The scale keeps h = W x and Wᵀ h of order 1 at the start, whatever the sizes.
    """
    return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(shape, generator=generator)


class ToyModel(nn.Module):
    """``n_instances`` independent toy models: x̂ = ReLU(Wᵀ W x + b_final).

    Parameters ``W [n_instances, d_hidden, n_features]``, initialised Xavier-normal: every
    entry N(0, σ²) with σ = sqrt(2 / (d_hidden + n_features)), drawn on the CPU from
    ``generator`` (the global generator if None); ``b_final [n_instances, n_features]``,
    zeros. Attributes ``n_features``, ``d_hidden``, ``n_instances``, ``relu`` keep the
    arguments. With ``relu=False`` the output is linear: x̂ = Wᵀ W x + b_final.
    Move the model with ``.to(device)`` after building it.
    """

    def __init__(self, n_features: int, d_hidden: int, n_instances: int = 1, relu: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.n_features, self.d_hidden, self.n_instances, self.relu = n_features, d_hidden, n_instances, relu
        self.W = nn.Parameter(xavier_normal((n_instances, d_hidden, n_features), d_hidden, n_features, generator))
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def hidden(self, x: Float[Tensor, "batch inst feats"]) -> Float[Tensor, "batch inst d_hidden"]:
        """The hidden activations h = W x, per instance."""
        if x.ndim != 3 or x.shape[1:] != (self.n_instances, self.n_features):
            raise ValueError(f"expected a batch [batch, n_instances, n_features] = [batch, "
                             f"{self.n_instances}, {self.n_features}], got shape {tuple(x.shape)}")
        return einops.einsum(self.W, x, "inst hidden feats, batch inst feats -> batch inst hidden")

    def forward(self, x: Float[Tensor, "batch inst feats"]) -> Float[Tensor, "batch inst feats"]:
        """The reconstruction x̂ = ReLU(Wᵀ h + b_final) with h = ``self.hidden(x)`` (no ReLU if ``relu=False``)."""
        out = einops.einsum(self.W, self.hidden(x), "inst hidden feats, batch inst hidden -> batch inst feats")
        out = out + self.b_final
        return torch.relu(out) if self.relu else out


class NeuronModel(ToyModel):
    """A toy model whose hidden layer has neurons: h = ReLU(W x), x̂ = ReLU(Wᵀ h + b_final).

    The same parameters, initialisation and ``forward`` as ``ToyModel`` (which reads the
    hidden layer through ``self.hidden``); only the hidden activations change. The ReLU acts
    on each hidden dimension separately, so the hidden basis is now privileged: a rotation
    of the hidden space no longer leaves the model unchanged, and "neuron k" means something.
    """

    def hidden(self, x: Float[Tensor, "batch inst feats"]) -> Float[Tensor, "batch inst d_hidden"]:
        """The neuron activations h = ReLU(W x), per instance."""
        return torch.relu(super().hidden(x))


class AbsoluteValueModel(nn.Module):
    """``n_instances`` models that compute |x| of every feature through ``d_hidden`` neurons.

    h = ReLU(W_in x), y = ReLU(W_out h + b_final), per instance, with parameters
    ``W_in [n_instances, d_hidden, n_features]``, ``W_out [n_instances, n_features, d_hidden]``
    (both Xavier-normal as in ``ToyModel``, σ = sqrt(2 / (d_hidden + n_features)), W_in drawn
    first from ``generator``) and ``b_final [n_instances, n_features]`` (zeros). Attributes
    ``n_features``, ``d_hidden``, ``n_instances`` keep the arguments, so that
    ``train_toy_models`` can draw batches for it. Unlike ``ToyModel`` the two weight matrices
    are separate: the model computes a function, it does not reconstruct its input.
    """

    def __init__(self, n_features: int, d_hidden: int, n_instances: int = 1,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.n_features, self.d_hidden, self.n_instances = n_features, d_hidden, n_instances
        self.W_in = nn.Parameter(xavier_normal((n_instances, d_hidden, n_features), d_hidden, n_features, generator))
        self.W_out = nn.Parameter(xavier_normal((n_instances, n_features, d_hidden), d_hidden, n_features, generator))
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def forward(self, x: Float[Tensor, "batch inst feats"]) -> Float[Tensor, "batch inst feats"]:
        """y = ReLU(W_out ReLU(W_in x) + b_final), per instance."""
        h = torch.relu(einops.einsum(self.W_in, x, "inst hidden feats, batch inst feats -> batch inst hidden"))
        out = einops.einsum(self.W_out, h, "inst feats hidden, batch inst hidden -> batch inst feats")
        return torch.relu(out + self.b_final)


def importance_weighted_loss(x: Float[Tensor, "batch inst feats"], x_hat: Float[Tensor, "batch inst feats"],
                             importance: float | Tensor) -> Float[Tensor, "inst"]:
    """Per instance, the mean over batch and features of importance_i · (x_i - x̂_i)².

    ``x`` is the target (the input itself for a toy model), ``x_hat`` the model's output.
    ``importance`` is a number or broadcasts to ``[inst, feats]``. Training sums the result
    over instances, so that each instance gets exactly the gradient of its own loss; training
    also calls ``backward`` through it, so it must not change ``x`` or ``x_hat`` in place.
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


def train_toy_models(model: nn.Module, feature_probability: float | Tensor | None, importance: float | Tensor = 1.0,
                     steps: int = 5_000, batch_size: int = 1024, lr: float = 1e-3,
                     lr_schedule: Callable[[int, int], float] = cosine_decay_lr, seed: int = 0,
                     progress: bool = True, sampler: Callable[[int, torch.Generator], Tensor] | None = None,
                     target: Callable[[Tensor], Tensor] | None = None) -> nn.Module:
    """Train every instance of ``model`` at once, in place, and return it.

    Each step draws a fresh batch x on a CPU ``torch.Generator`` seeded once with ``seed``:
    ``sampler(batch_size, generator)`` if a sampler is given (``feature_probability`` is then
    unused and may be None), else ``generate_sparse_features`` with ``model.n_instances``,
    ``model.n_features`` and ``feature_probability``. The batch moves to the model's device,
    and one Adam step is taken on the sum over instances of
    ``importance_weighted_loss(target(x), model(x), importance)`` (``target(x) = x`` when
    ``target`` is None: reconstruct the input). The learning rate is
    ``lr · lr_schedule(step, steps)``. Instances share nothing, so this is the same as
    training each one on its own. A tqdm bar shows progress when ``progress`` is true.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    bar = tqdm(range(steps), disable=not progress, desc="training", mininterval=0.5)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = lr * lr_schedule(step, steps)
        x = sampler(batch_size, generator) if sampler is not None else generate_sparse_features(
            batch_size, model.n_instances, model.n_features, feature_probability, generator)
        x = x.to(device)
        loss = importance_weighted_loss(target(x) if target is not None else x, model(x), importance).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if progress and (step % 100 == 0 or step == steps - 1):
            bar.set_postfix(loss_per_instance=f"{loss.item() / model.n_instances:.3g}")
    return model


@torch.no_grad()
def held_out_loss(model: nn.Module, sampler: Callable[[int, torch.Generator], Tensor], importance: float | Tensor = 1.0,
                  batch_size: int = 16_384, seed: int = 12_345, target: Callable[[Tensor], Tensor] | None = None
                  ) -> Float[Tensor, "inst"]:
    """The loss per instance on one large fresh batch ``sampler(batch_size, generator)``.

    The generator is seeded with ``seed``, a stream training never used, so this measures
    what a model does on data it has not seen; two models compared on the same seed see the
    same batch.
    """
    x = sampler(batch_size, torch.Generator().manual_seed(seed)).to(next(model.parameters()).device)
    return importance_weighted_loss(target(x) if target is not None else x, model(x), importance)


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


def neuron_selectivity(W: Float[Tensor, "inst d_hidden feats"], eps: float = 1e-8) -> Float[Tensor, "inst d_hidden"]:
    """How much of neuron k's response belongs to its strongest feature.

    With features ≥ 0, feature i alone makes neuron k fire only if W[k, i] > 0: a negative
    weight can only silence the neuron. So only the positive part W⁺ = max(W, 0) counts:
    s_k = max_i (W⁺_ki)² / Σ_i (W⁺_ki)², per instance. 1 for a monosemantic neuron (it fires
    for one feature), 1/m when it fires equally for m features, and 0 for a neuron no feature
    can make fire (the denominator is clamped at ``eps``).
    """
    positive = W.clamp(min=0).pow(2)
    return positive.amax(dim=-1) / positive.sum(dim=-1).clamp(min=eps)


def single_feature_slopes(W_in: Float[Tensor, "inst d_hidden feats"], W_out: Float[Tensor, "inst feats d_hidden"]
                          ) -> Float[Tensor, "inst 2 feats feats"]:
    """How an ``AbsoluteValueModel``'s outputs move when one feature alone is on.

    With only feature j on, at x_j = σ·t (t ≥ 0, σ = +1 or -1), neuron k carries
    ReLU(σ·W_in[k, j])·t, so output i before its ReLU is b_i + t·S[σ, i, j] with
    S[σ, i, j] = Σ_k W_out[i, k] · ReLU(σ·W_in[k, j]). Returns S per instance with index 0
    for σ = +1 and 1 for σ = -1: ``[inst, 2, feats (output i), feats (input j)]``. Computing
    |x_j| needs S[+, j, j] = S[-, j, j] = 1; off the diagonal, S is the interference feature j
    sends into output i.
    """
    sides = torch.stack([W_in.clamp(min=0), (-W_in).clamp(min=0)], dim=1)
    return einops.einsum(W_out, sides, "inst i hidden, inst side hidden j -> inst side i j")


def neuron_contributions(W_in: Float[Tensor, "inst d_hidden feats"], W_out: Float[Tensor, "inst feats d_hidden"]
                         ) -> Float[Tensor, "inst 2 d_hidden feats"]:
    """What each neuron adds to computing |x_j|: C[σ, k, j] = W_out[j, k] · ReLU(σ·W_in[k, j]).

    Index 0 is σ = +1, 1 is σ = -1, as in ``single_feature_slopes``; summed over the neurons k,
    C[σ, :, j] gives that function's diagonal S[σ, j, j]. A neuron with two large entries
    serves two pieces (a feature and a sign each): it is polysemantic.
    """
    sides = torch.stack([W_in.clamp(min=0), (-W_in).clamp(min=0)], dim=1)
    return sides * W_out.transpose(-1, -2)[:, None]


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

    f = ``feature`` (negative indices count from the end, as in Python). Ignored:
    ‖W_f‖ < ``represented``. Otherwise superposed when the other features' projections on
    its unit direction Ŵ_f = W_f / ‖W_f‖ carry Σ_{j≠f} (Ŵ_f · W_j)² ≥ ``interference``, else
    dedicated (it has a direction of its own).
    """
    f = feature % W.shape[-1]
    norms = W.norm(dim=1)
    unit = W[:, :, f] / norms[:, f:f + 1].clamp(min=1e-8)
    overlaps = einops.einsum(unit, W, "inst hidden, inst hidden j -> inst j").pow(2)
    shared = overlaps.sum(-1) - overlaps[:, f]
    phase = torch.where(shared >= interference, 2, 1)
    return torch.where(norms[:, f] < represented, 0, phase)
