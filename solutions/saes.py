"""Chapter 4, sparse autoencoders: reference solutions.

A sparse autoencoder (SAE) rewrites an activation ``x [d_in]`` as a sparse, non-negative
code ``z [d_sae]`` over a dictionary of ``d_sae`` directions (the decoder rows), with
usually ``d_sae > d_in``. This module holds the SAE itself (ReLU + L1 or TopK, tied or
untied), its loss and metrics, a trainer that trains many SAEs at once with
``torch.func.vmap``, dead-latent resampling, synthetic data with known ground-truth
features (Sharkey et al. 2022; hierarchical parent/child features for absorption), and the
pieces of a latent dashboard for a real model.

Shapes: a batch of activations is ``[batch, d_in]``; codes are ``[batch, d_sae]``.
"""

from __future__ import annotations

import copy
import html
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from utils.activations import transformer_blocks


# --------------------------------------------------------------------------- the model


class SparseAutoencoder(nn.Module):
    """x ≈ decode(encode(x)) with a sparse, non-negative code.

    Parameters: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``b_dec [d_in]`` and, unless
    ``tied``, ``W_dec [d_sae, d_in]``. A tied SAE has no ``W_dec``: its decoder is
    ``W_enc.T``. With ``k`` set it is a TopK SAE: only the k largest pre-activations of
    each row survive.

    What the given code relies on: the attributes ``d_in``, ``d_sae``, ``tied`` and ``k``
    (under these names), and ``forward`` running under ``torch.func.vmap`` (the trainer vmaps
    it over a stack of SAEs), so no data-dependent Python control flow and no in-place
    indexing such as ``z[pre < kth] = 0``.
    """

    def __init__(self, d_in: int, d_sae: int, tied: bool = False, k: int | None = None):
        """Decoder rows start as random unit vectors, ``W_enc`` as their transpose, biases at 0.

        Raises a ValueError unless 1 <= k <= d_sae (when k is given).
        """
        super().__init__()
        if k is not None and not 1 <= k <= d_sae:
            raise ValueError(f"k must be between 1 and d_sae={d_sae} (it is how many latents stay "
                             f"active per row), got k={k}")
        self.d_in, self.d_sae, self.tied, self.k = d_in, d_sae, tied, k
        # decoder rows start as random unit vectors, the encoder as their transpose
        directions = torch.randn(d_sae, d_in)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        self.W_enc = nn.Parameter(directions.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if not tied:
            self.W_dec = nn.Parameter(directions.clone())

    def decoder_directions(self) -> Float[Tensor, "d_sae d_in"]:
        """The dictionary: ``W_dec``, or ``W_enc.T`` when tied (the same tensor, not a copy)."""
        return self.W_enc.T if self.tied else self.W_dec

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """z = act((x - b_dec) @ W_enc + b_enc).

        act is ReLU; for a TopK SAE, ReLU of the k largest pre-activations of each row, the
        others set to 0. Subtracting ``b_dec`` first centres x where the decoder adds it back.
        """
        if x.shape[-1] != self.d_in:
            raise ValueError(f"the SAE expects activations with d_in={self.d_in} features in the last "
                             f"dimension, got shape {tuple(x.shape)}")
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.k is None:
            return pre.relu()
        top = pre.topk(self.k, dim=-1)
        # out of place (scatter, not indexing assignment) so that it works under vmap
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, z: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """x̂ = z @ W_dec + b_dec."""
        if z.shape[-1] != self.d_sae:
            raise ValueError(f"the SAE expects codes with d_sae={self.d_sae} latents in the last "
                             f"dimension, got shape {tuple(z.shape)}")
        return z @ self.decoder_directions() + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> tuple[Float[Tensor, "... d_in"], Float[Tensor, "... d_sae"]]:
        """``(x_hat, z)``."""
        z = self.encode(x)
        return self.decode(z), z


def sae_loss(x: Float[Tensor, "batch d_in"], x_hat: Float[Tensor, "batch d_in"],
             z: Float[Tensor, "batch d_sae"], l1_coeff: float | Tensor) -> Float[Tensor, ""]:
    """mean over the batch of ‖x - x̂‖² + l1_coeff · ‖z‖₁.

    The squared error is summed over d_in (not averaged): the loss of a row does not shrink
    as d_in grows, so an L1 coefficient means the same thing at every width.
    """
    reconstruction = (x - x_hat).pow(2).sum(dim=-1).mean()
    sparsity = z.abs().sum(dim=-1).mean()
    return reconstruction + l1_coeff * sparsity


# --------------------------------------------------------------------------- metrics


def fraction_variance_explained(x: Float[Tensor, "batch d_in"], x_hat: Float[Tensor, "batch d_in"]) -> Float[Tensor, ""]:
    """FVE = 1 - Σ‖x - x̂‖² / Σ‖x - mean(x)‖², sums over the batch and d_in.

    1 is a perfect reconstruction; 0 is no better than predicting the mean activation.
    """
    residual = (x - x_hat).pow(2).sum()
    total = (x - x.mean(dim=0)).pow(2).sum()
    return 1 - residual / total


def firing_rates(z: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "d_sae"]:
    """The fraction of rows in which each latent is active (z > 0)."""
    return (z > 0).float().mean(dim=0)


def mean_max_cosine_similarity(learned: Float[Tensor, "n_learned d"], true: Float[Tensor, "n_true d"]) -> Float[Tensor, ""]:
    """MMCS (Sharkey et al. 2022): for each true direction, the best cosine with any learned
    one, averaged over the true directions.

    1 means every true feature has a learned direction pointing exactly along it. Extra
    learned directions cost nothing, a missed true feature does.
    """
    learned = learned / learned.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    true = true / true.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return (true @ learned.T).max(dim=1).values.mean()


def matched_cosine_similarity(learned: Float[Tensor, "n_learned d"], true: Float[Tensor, "n_true d"]) -> Float[Tensor, ""]:
    """Like MMCS, but one-to-one: each learned direction may be matched to at most one true
    one (the Hungarian algorithm maximises the total cosine). Mean over the matched pairs.

    MMCS lets one learned direction serve many true ones; this score does not.
    """
    learned = learned / learned.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    true = true / true.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    cos = (true @ learned.T).detach().cpu()
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    return cos[rows, cols].sum() / len(true)


def absorption_rate(z: Float[Tensor, "batch d_sae"], parent_latent: int,
                    child_active: Bool[Tensor, "batch"]) -> Float[Tensor, ""]:
    """Of the rows where a child feature is active (so its parent is too), the fraction in
    which the parent's latent does not fire (z == 0): the parent was absorbed.
    """
    if not child_active.any():
        raise ValueError("no row has an active child feature, so absorption is undefined")
    return (z[child_active, parent_latent] <= 0).float().mean()


# --------------------------------------------------------------------------- training many SAEs at once


def l1_objective(sae: SparseAutoencoder, x: Float[Tensor, "batch d_in"], coeff: Tensor
                 ) -> tuple[Float[Tensor, ""], Float[Tensor, "batch d_in"], Float[Tensor, "batch d_sae"]]:
    """What a ReLU + L1 (or TopK, with coeff 0) SAE minimises: ``(sae_loss, x_hat, z)``."""
    x_hat, z = sae(x)
    return sae_loss(x, x_hat, z, coeff), x_hat, z


class SAEObjective(nn.Module):
    """``objective(sae, x, coeff)`` as a module, so that ``functional_call`` can run it with
    one instance's parameters (its parameter names are the SAE's, prefixed ``sae.``)."""

    def __init__(self, sae: SparseAutoencoder, objective: Callable):
        super().__init__()
        self.sae, self.objective = sae, objective

    def forward(self, x, coeff):
        return self.objective(self.sae, x, coeff)


@torch.no_grad()
def resample_dead_latents(W_enc: Float[Tensor, "d_in d_sae"], W_dec: Float[Tensor, "d_sae d_in"],
                          b_enc: Float[Tensor, "d_sae"], b_dec: Float[Tensor, "d_in"], dead: Bool[Tensor, "d_sae"],
                          pool: Float[Tensor, "n d_in"], pool_loss: Float[Tensor, "n"], seed: int
                          ) -> tuple[Float[Tensor, "d_in d_sae"], Float[Tensor, "d_sae d_in"], Float[Tensor, "d_sae"]]:
    """Point every dead latent at an input the SAE reconstructs badly (Bricken et al. 2023).

    For each dead latent, independently, draw one row j of ``pool`` with probability
    ∝ ``pool_loss[j]²`` (with replacement; a row of loss 0 is never drawn), and set

        W_dec[latent]    = u,  u = (pool[j] − b_dec) / ‖pool[j] − b_dec‖
        W_enc[:, latent] = u · 0.2 · (mean norm of the encoder columns of the live latents)
        b_enc[latent]    = 0

    (1 in place of the mean norm when no latent is live). Live latents and ``b_dec`` are
    untouched. Returns new ``(W_enc, W_dec, b_enc)``; the inputs are not modified. The draws
    use a CPU generator seeded by ``seed``, so they are the same on every device.
    """
    W_enc, W_dec, b_enc = W_enc.clone(), W_dec.clone(), b_enc.clone()
    latents = dead.nonzero().squeeze(-1)
    if len(latents) == 0:
        return W_enc, W_dec, b_enc
    weights = pool_loss.detach().double().pow(2).cpu()
    rows = torch.multinomial(weights, len(latents), replacement=True,
                             generator=torch.Generator().manual_seed(seed)).to(pool.device)
    directions = pool[rows] - b_dec
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    live = ~dead
    encoder_norm = W_enc[:, live].norm(dim=0).mean() if live.any() else 1.0
    W_dec[latents] = directions
    W_enc[:, latents] = directions.T * 0.2 * encoder_norm
    b_enc[latents] = 0.0
    return W_enc, W_dec, b_enc


@dataclass
class TrainedSAEs:
    """The result of ``train_saes``: one SAE per instance and their training curves.

    ``history`` holds, per logged step, ``[n_instances]`` tensors of the loss, L0 (active
    latents per row), FVE on the batch and the fraction of dead latents (none fired in the
    last ``dead_window`` steps). ``resampled[i]`` marks the latents of instance i that the last
    resampling revived (all False without resampling).
    """

    saes: list[SparseAutoencoder]
    history: dict[str, list[Tensor]]
    resampled: Bool[Tensor, "inst d_sae"]


def decoder_parameter(sae: SparseAutoencoder) -> tuple[str, int]:
    """Which stacked parameter holds the decoder rows, and along which dim they run."""
    return ("W_enc", -2) if sae.tied else ("W_dec", -1)


@torch.no_grad()
def normalise_decoder_(params: dict[str, Tensor], key: str, dim: int) -> None:
    """Rescale every decoder row (of every instance) to unit norm, in place."""
    params[key].div_(params[key].norm(dim=dim, keepdim=True).clamp(min=1e-8))


@torch.no_grad()
def resample_instances_(params: dict[str, Tensor], optimizer: torch.optim.Optimizer, dead: Bool[Tensor, "inst d_sae"],
                        pool: Float[Tensor, "inst n d_in"], pool_loss: Float[Tensor, "inst n"], tied: bool,
                        generator: torch.Generator) -> None:
    """``resample_dead_latents`` on every instance, written into the stacked parameters, and
    Adam's moments of the changed entries reset to zero. A tied SAE keeps only the new
    decoder rows (its encoder is their transpose)."""
    for i in dead.any(dim=1).nonzero().squeeze(-1).tolist():
        W_dec = params["W_enc"][i].T if tied else params["W_dec"][i]
        seed = int(torch.randint(2**31, (1,), generator=generator))
        W_enc, W_dec, b_enc = resample_dead_latents(params["W_enc"][i], W_dec, params["b_enc"][i], params["b_dec"][i],
                                                    dead[i], pool[i], pool_loss[i], seed)
        params["W_enc"][i] = W_dec.T if tied else W_enc
        params["b_enc"][i] = b_enc
        if not tied:
            params["W_dec"][i] = W_dec
        latents = dead[i].nonzero().squeeze(-1)
        for name, latent_dim in (("W_enc", 1), ("W_dec", 0), ("b_enc", 0)):
            state = optimizer.state.get(params[name], {}) if name in params else {}
            for moment in ("exp_avg", "exp_avg_sq"):
                if moment in state:
                    state[moment][i].index_fill_(latent_dim, latents, 0.0)


def stacked_sampler(*groups: tuple[Callable[[int, torch.Generator], Tensor], int]
                    ) -> Callable[[int, torch.Generator], Float[Tensor, "inst batch d_in"]]:
    """A sampler giving each instance its own data: ``(sample, n)`` pairs, the first n
    instances on batches of the first sampler, and so on (instances of one group share a batch)."""
    def sample(batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.cat([s(batch_size, generator).expand(n, -1, -1) for s, n in groups])
    return sample


def train_saes(make_sae: Callable[[], SparseAutoencoder], sample: Callable[[int, torch.Generator], Tensor],
               coeffs: Sequence[float] | Tensor, steps: int = 2000, batch_size: int = 1024, lr: float = 1e-3,
               seed: int = 0, objective: Callable = l1_objective, resample_at: Sequence[int] = (),
               resample_instances: Sequence[bool] | None = None, dead_window: int = 250,
               pool_size: int = 16_384, log_every: int = 10, progress: bool = True) -> TrainedSAEs:
    """Train ``len(coeffs)`` SAEs at once, one per sparsity coefficient.

    ``make_sae()`` builds one SAE (all instances share its shape, ``tied`` and ``k``);
    ``sample(batch_size, generator)`` returns a fresh batch, ``[batch, d_in]`` shared by every
    instance or ``[n_instances, batch, d_in]`` (``stacked_sampler``), drawn on the CPU and
    moved to the SAEs' device. The instances' parameters are stacked (``[n_instances, ...]``)
    and one ``torch.func.vmap`` of ``objective(sae, x, coeff) -> (loss, x_hat, z)`` trains them
    all; Adam is per-entry, so the instances never interact. After every step each decoder
    row is rescaled to unit norm (otherwise the L1 penalty could be dodged by shrinking z
    and growing the decoder).

    A latent is dead when it has not fired in the last ``dead_window`` steps. After each step
    listed in ``resample_at`` (counted from 1), the dead latents of every instance are
    resampled (``resample_dead_latents``) from a pool of ``pool_size`` fresh rows weighted by
    their squared reconstruction error, and get a fresh ``dead_window``; with
    ``resample_instances`` (one bool per instance) only the instances marked True are.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    saes = [make_sae() for _ in range(len(coeffs))]
    device = next(saes[0].parameters()).device
    coeffs = torch.as_tensor(coeffs, dtype=torch.float32).reshape(-1).to(device)
    params, buffers = stack_module_state(saes)
    key, dim = decoder_parameter(saes[0])
    normalise_decoder_(params, key, dim)
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    loss_module = SAEObjective(copy.deepcopy(saes[0]).to("meta"), objective)

    def one_instance(p, b, coeff, x):
        return functional_call(loss_module, ({f"sae.{k}": v for k, v in p.items()},
                                             {f"sae.{k}": v for k, v in b.items()}), (x, coeff))

    def draw(n: int) -> Tensor:
        x = sample(n, generator).to(device)
        return x if x.dim() == 3 else x.expand(len(coeffs), -1, -1)

    step_all = vmap(one_instance, in_dims=(0, 0, 0, 0))
    last_fired = torch.zeros(len(coeffs), saes[0].d_sae, device=device)  # steps done when each latent last fired
    resampled = torch.zeros(len(coeffs), saes[0].d_sae, dtype=torch.bool, device=device)
    resample_at = set(resample_at)
    may_resample = torch.ones(len(coeffs), 1, dtype=torch.bool, device=device) if resample_instances is None \
        else torch.as_tensor(resample_instances, dtype=torch.bool, device=device).reshape(-1, 1)
    history: dict[str, list[Tensor]] = {"step": [], "loss": [], "l0": [], "fve": [], "dead": []}
    for step in tqdm(range(1, steps + 1), desc="training SAEs", disable=not progress, mininterval=1.0):
        x = draw(batch_size)
        losses, x_hat, z = step_all(params, buffers, coeffs, x)
        losses.sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        normalise_decoder_(params, key, dim)
        with torch.no_grad():
            last_fired.masked_fill_((z > 0).any(dim=1), step)
            dead = step - last_fired >= dead_window
            if step in resample_at:
                pool = draw(pool_size)
                pool_loss = (step_all(params, buffers, coeffs, pool)[1] - pool).pow(2).sum(-1)
                resampled = dead & may_resample
                resample_instances_(params, optimizer, resampled, pool, pool_loss, saes[0].tied, generator)
                last_fired.masked_fill_(resampled, step)
            if step % log_every == 0 or step == steps:
                history["step"].append(torch.tensor(step))
                history["loss"].append(losses.detach().cpu())
                history["l0"].append((z > 0).float().sum(-1).mean(-1).cpu())
                history["fve"].append(vmap(fraction_variance_explained)(x, x_hat).cpu())
                history["dead"].append(dead.float().mean(-1).cpu())
    for i, sae in enumerate(saes):
        sae.load_state_dict({name: p[i].detach().clone() for name, p in params.items()})
    return TrainedSAEs(saes, history, resampled.cpu())


def plateau_change(history: dict[str, list[Tensor]], key: str = "loss") -> Float[Tensor, "inst"]:
    """Whether a run has stopped learning: how far a training curve moved between the last two
    quarters of training, as a fraction of how far it moved in all,

        |mean(last quarter) − mean(quarter before)| / |first value − mean(last quarter)|

    per instance (0: flat at the end; means over a quarter smooth out the batch-to-batch noise)."""
    curve = torch.stack(history[key])
    quarter = max(len(curve) // 4, 1)
    last, before = curve[-quarter:].mean(0), curve[-2 * quarter: -quarter].mean(0)
    return (last - before).abs() / (curve[0] - last).abs().clamp(min=1e-12)


def dataset_sampler(data: Float[Tensor, "n d_in"]) -> Callable[[int, torch.Generator], Tensor]:
    """A ``sample(batch_size, generator)`` for ``train_saes`` that draws rows of a fixed dataset."""
    return lambda batch_size, generator: data[torch.randint(len(data), (batch_size,), generator=generator)]


@torch.no_grad()
def summarise(sae: SparseAutoencoder, x: Float[Tensor, "batch d_in"], features: Float[Tensor, "n_features d_in"]
              ) -> dict[str, float]:
    """``evaluate`` on held-out rows ``x``, plus how well the dictionary recovers the true
    ``features``: MMCS and the one-to-one matched cosine."""
    W = sae.decoder_directions().detach().cpu()
    return {"mmcs": mean_max_cosine_similarity(W, features).item(),
            "matched": matched_cosine_similarity(W, features).item(), **evaluate(sae, x)}


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, x: Float[Tensor, "batch d_in"]) -> dict[str, float]:
    """FVE, L0 (mean active latents per row) and the fraction of latents that never fire on ``x``
    (moved to the SAE's device first)."""
    x = x.to(sae.W_enc.device)
    x_hat, z = sae(x)
    return {"fve": fraction_variance_explained(x, x_hat).item(),
            "l0": (z > 0).float().sum(-1).mean().item(),
            "dead": (firing_rates(z) == 0).float().mean().item()}


# --------------------------------------------------------------------------- JumpReLU


def rectangle_window(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """K((pre − θ) / ε) for the rectangle kernel K(u) = 1 if |u| < 1/2 else 0, as a float."""
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype)


class JumpReLU(torch.autograd.Function):
    """z = pre · H(pre − θ): the pre-activation where it exceeds the threshold θ, else 0.

    Backward (Rajamanoharan et al. 2024, "Jumping ahead"): ∂z/∂pre = H(pre − θ) as usual,
    and the straight-through estimate ∂z/∂θ = −(θ / ε) · K((pre − θ) / ε), with K the
    rectangle kernel (1 where |pre − θ| < ε/2, else 0) and ε the ``bandwidth``.

    Shapes: ``pre [..., d_sae]``, ``threshold [d_sae]`` (broadcast over the leading dims; its
    gradient is summed over them), ``bandwidth`` a float (no gradient). Written with
    ``setup_context`` and ``generate_vmap_rule = True`` so that it runs under ``torch.func.vmap``,
    as ``train_saes`` needs.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(pre, threshold, bandwidth):
        return pre * (pre > threshold)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pre, threshold, bandwidth = inputs
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth

    @staticmethod
    def backward(ctx, grad_z):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad_z * (pre > threshold)
        grad_threshold = -(threshold / ctx.bandwidth) * rectangle_window(pre, threshold, ctx.bandwidth) * grad_z
        return grad_pre, grad_threshold.sum_to_size(threshold.shape), None


class Step(torch.autograd.Function):
    """H(pre − θ) (1.0 where pre > θ, else 0.0): the count that an L0 penalty sums.

    Backward: no gradient to ``pre`` (zeros), and the straight-through estimate
    ∂H/∂θ = −(1 / ε) · K((pre − θ) / ε) for the threshold, K and ε as in ``JumpReLU``.
    Same shapes and vmap requirement as ``JumpReLU``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(pre, threshold, bandwidth):
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pre, threshold, bandwidth = inputs
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth

    @staticmethod
    def backward(ctx, grad_step):
        pre, threshold = ctx.saved_tensors
        grad_threshold = -(1 / ctx.bandwidth) * rectangle_window(pre, threshold, ctx.bandwidth) * grad_step
        return torch.zeros_like(pre), grad_threshold.sum_to_size(threshold.shape), None


class JumpReLUSAE(SparseAutoencoder):
    """An SAE whose latent i fires only when its pre-activation exceeds a learned threshold θ_i.

    θ is stored as ``log_threshold [d_sae]`` (so it stays positive), starting at ``threshold``;
    ``bandwidth`` is the ε of the straight-through estimators. Train it with ``l0_objective``.
    """

    def __init__(self, d_in: int, d_sae: int, threshold: float = 0.1, bandwidth: float = 0.05):
        super().__init__(d_in, d_sae)
        self.bandwidth = bandwidth
        self.log_threshold = nn.Parameter(torch.full((d_sae,), math.log(threshold)))

    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return JumpReLU.apply(self.pre_activations(x), self.log_threshold.exp(), self.bandwidth)


def l0_objective(sae: JumpReLUSAE, x: Float[Tensor, "batch d_in"], coeff: Tensor
                 ) -> tuple[Float[Tensor, ""], Float[Tensor, "batch d_in"], Float[Tensor, "batch d_sae"]]:
    """What a JumpReLU SAE minimises: mean over the batch of ‖x − x̂‖² + coeff · ‖z‖₀, the L0
    counted by ``Step`` so that the threshold gets a gradient from it."""
    x_hat, z = sae(x)
    l0 = Step.apply(sae.pre_activations(x), sae.log_threshold.exp(), sae.bandwidth).sum(-1).mean()
    return sae_loss(x, x_hat, z, 0.0) + coeff * l0, x_hat, z


# --------------------------------------------------------------------------- synthetic ground truth


@dataclass
class GroundTruth:
    """Sparse features in superposition, in the style of Sharkey et al. (2022).

    ``features [n_features, d]`` are random unit directions (more of them than dimensions);
    feature i is active with probability ``probs[i]`` (decaying with i), with a magnitude
    Uniform[0, 1); x = Σ_i c_i · features_i. With ``correlation`` set, which features are
    active is correlated through a Gaussian copula with a random correlation matrix.
    """

    features: Float[Tensor, "n_features d"]
    probs: Float[Tensor, "n_features"]
    correlation_factor: Float[Tensor, "n_features n_features"] | None = None

    def sample_coefficients(self, batch_size: int, generator: torch.Generator) -> Float[Tensor, "batch n_features"]:
        """Sparse non-negative feature coefficients."""
        n = len(self.probs)
        if self.correlation_factor is None:
            active = torch.rand(batch_size, n, generator=generator) < self.probs
        else:
            # a feature fires when its correlated Gaussian exceeds the (1 - p) quantile
            gaussian = torch.randn(batch_size, n, generator=generator) @ self.correlation_factor.T
            active = gaussian > torch.special.ndtri(1 - self.probs)
        return active * torch.rand(batch_size, n, generator=generator)

    def sample(self, batch_size: int, generator: torch.Generator) -> Float[Tensor, "batch d"]:
        return self.sample_coefficients(batch_size, generator) @ self.features


def make_ground_truth(n_features: int = 64, d: int = 32, max_prob: float = 0.1, min_prob: float = 0.02,
                      correlated: bool = False, seed: int = 0) -> GroundTruth:
    """Random unit feature directions and firing probabilities decaying geometrically from
    ``max_prob`` (feature 0) to ``min_prob`` (the last); optionally correlated."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n_features, d, generator=g)
    features = features / features.norm(dim=-1, keepdim=True)
    probs = max_prob * (min_prob / max_prob) ** torch.linspace(0, 1, n_features)
    factor = None
    if correlated:
        # a random correlation matrix with strong off-diagonal structure: A Aᵀ + I, rescaled
        A = torch.randn(n_features, n_features // 4, generator=g)
        cov = A @ A.T + torch.eye(n_features)
        std = cov.diagonal().sqrt()
        factor = torch.linalg.cholesky(cov / std[:, None] / std[None, :])
    return GroundTruth(features, probs, factor)


@dataclass
class Hierarchy:
    """Parent/child features, for feature absorption; one data setting per instance.

    Feature 0 is the parent, features ``1..n_children`` its children, the rest are
    independent. Each row has at most one child, each child with probability
    ``child_prob``; whenever a child is active the parent is too ("snake" implies "starts
    with s"); the parent is also active alone with probability ``parent_alone_prob``. Active
    hierarchy features have magnitude Uniform[1 - spread, 1 + spread), each drawn on its own
    (spread 0: always exactly 1), independent ones Uniform[0, 1). Directions are
    orthonormal, so there is no superposition: any absorption comes from the sparsity penalty.

    ``child_prob``, ``parent_alone_prob`` and ``spread`` are ``[settings]`` tensors: one data
    setting per SAE instance, so that a whole grid of settings trains in one run.
    """

    features: Float[Tensor, "n_features d"]
    n_children: int
    child_prob: Float[Tensor, "settings"]
    parent_alone_prob: Float[Tensor, "settings"]
    spread: Float[Tensor, "settings"]
    other_prob: float

    @property
    def cooccurrence(self) -> Float[Tensor, "settings"]:
        """P(some child | parent): how much of the parent's firing comes with a child."""
        with_child = self.n_children * self.child_prob
        return with_child / (with_child + (1 - with_child) * self.parent_alone_prob)

    def sample_coefficients(self, batch_size: int, generator: torch.Generator
                            ) -> Float[Tensor, "settings batch n_features"]:
        settings, n = len(self.child_prob), len(self.features)
        child = (torch.rand(settings, batch_size, generator=generator) / self.child_prob[:, None]).long()
        children = nn.functional.one_hot(child.clamp(max=self.n_children), self.n_children + 1)[..., :-1]
        alone = torch.rand(settings, batch_size, generator=generator) < self.parent_alone_prob[:, None]
        parent = children.any(-1) | alone
        active = torch.cat([parent[..., None], children.bool()], dim=-1)
        uniform = torch.rand(settings, batch_size, 1 + self.n_children, generator=generator)
        magnitudes = 1 + self.spread[:, None, None] * (2 * uniform - 1)
        others = n - 1 - self.n_children
        other_active = torch.rand(settings, batch_size, others, generator=generator) < self.other_prob
        other_values = torch.rand(settings, batch_size, others, generator=generator)
        return torch.cat([active * magnitudes, other_active * other_values], dim=-1)

    def sample(self, batch_size: int, generator: torch.Generator) -> Float[Tensor, "settings batch d"]:
        return self.sample_coefficients(batch_size, generator) @ self.features


def make_hierarchy(child_prob: float | Sequence[float] = 0.05, parent_alone_prob: float | Sequence[float] = 0.05,
                   spread: float | Sequence[float] = 0.0, n_children: int = 3, n_other: int = 8,
                   other_prob: float = 0.05, seed: int = 0) -> Hierarchy:
    """A parent, ``n_children`` children and ``n_other`` independent features, in as many
    dimensions (random orthonormal directions). ``child_prob``, ``parent_alone_prob`` and
    ``spread`` are numbers or sequences of one value per setting (they broadcast together)."""
    g = torch.Generator().manual_seed(seed)
    n = 1 + n_children + n_other
    features, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    settings = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                                         for v in (child_prob, parent_alone_prob, spread)))
    return Hierarchy(features, n_children, *settings, other_prob)


def best_latents(sae: SparseAutoencoder, features: Float[Tensor, "n_features d"]) -> Int[Tensor, "n_features"]:
    """For each true feature, the latent whose decoder row has the highest cosine with it."""
    W = sae.decoder_directions().detach().cpu()
    W = W / W.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return (features.cpu() @ W.T).argmax(dim=1)


@torch.no_grad()
def measure_absorption(saes: Sequence[SparseAutoencoder], hierarchy: Hierarchy, n_rows: int = 20_000,
                       seed: int = 1) -> dict[str, Float[Tensor, "settings"]]:
    """How much of the parent each SAE (one per setting of ``hierarchy``) has folded into its
    children's latents.

    ``rate``: ``absorption_rate`` over fresh rows where a child is active, for the latent
    that best matches the parent's direction. ``decoder_cos``: the mean, over children, of
    the cosine between the parent's direction and the decoder row of the child's best
    latent (0 when the child latent is pure child, about 0.7 when it is parent + child).
    """
    coeffs = hierarchy.sample_coefficients(n_rows, torch.Generator().manual_seed(seed))
    children = slice(1, 1 + hierarchy.n_children)
    rates, cosines = [], []
    for sae, c in zip(saes, coeffs):
        _, z = sae((c @ hierarchy.features).to(sae.W_enc.device))
        latents = best_latents(sae, hierarchy.features)
        rates.append(absorption_rate(z.cpu(), int(latents[0]), (c[:, children] > 0).any(dim=1)))
        W = sae.decoder_directions().cpu()[latents[children]]
        cosines.append(((W / W.norm(dim=-1, keepdim=True)) @ hierarchy.features[0]).mean())
    return {"rate": torch.stack(rates), "decoder_cos": torch.stack(cosines)}


# --------------------------------------------------------------------------- a real model


def stdlib_texts(n_texts: int = 600, chars: int = 400, files_per_module: int = 3) -> list[str]:
    """Chunks of real text from the Python standard library: code, comments and docstrings.

    Top-level modules in sorted order; from each, the first ``files_per_module`` chunks of
    ``chars`` characters (cut at line ends), until ``n_texts`` chunks. Deterministic for a
    given Python version.
    """
    import sysconfig
    from pathlib import Path

    texts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        chunk, taken = "", 0
        for line in source.splitlines(keepends=True):
            chunk += line
            if len(chunk) >= chars:
                if chunk.strip():
                    texts.append(chunk)
                    taken += 1
                chunk = ""
                if taken == files_per_module or len(texts) == n_texts:
                    break
        if len(texts) == n_texts:
            break
    return texts


def activation_colour(value: float, top: float) -> str:
    """A CSS background: white at 0, deep orange at ``top``."""
    alpha = 0.0 if top <= 0 else max(0.0, min(1.0, value / top))
    return f"rgba(255, 120, 0, {alpha:.2f})"


def context_html(tokens: Sequence[str], acts: Sequence[float], centre: int, top: float) -> str:
    """One line of tokens with their background shaded by activation; ``centre`` underlined."""
    spans = []
    for i, (token, act) in enumerate(zip(tokens, acts)):
        text = token[2:] if token.startswith("##") else " " + token
        style = f"background:{activation_colour(act, top)};" + ("border-bottom:2px solid black;" if i == centre else "")
        spans.append(f'<span style="{style}" title="{act:.2f}">{html.escape(text)}</span>')
    return "".join(spans)


def top_contexts(z_latent: Float[Tensor, "tokens"], text_index: Int[Tensor, "tokens"], n: int = 8,
                 window: int = 8) -> list[tuple[int, range]]:
    """The ``n`` tokens where a latent is largest, each with the row range of its context
    (up to ``window`` tokens either side, never crossing into another text)."""
    out = []
    for row in z_latent.topk(min(n, len(z_latent))).indices.tolist():
        if z_latent[row] <= 0:
            break
        lo, hi = row, row
        while lo > 0 and row - lo < window and text_index[lo - 1] == text_index[row]:
            lo -= 1
        while hi + 1 < len(text_index) and hi - row < window and text_index[hi + 1] == text_index[row]:
            hi += 1
        out.append((row, range(lo, hi + 1)))
    return out


def latent_dashboard(latent: int, z: Float[Tensor, "tokens d_sae"], tokens: Sequence[str],
                     text_index: Int[Tensor, "tokens"], n: int = 8, window: int = 8) -> str:
    """HTML for one latent: firing rate, its top-activating contexts with tokens highlighted."""
    column = z[:, latent]
    rate = (column > 0).float().mean().item()
    top = column.max().item()
    lines = [f"<b>latent {latent}</b>: fires on {rate:.2%} of tokens, max activation {top:.2f}<br>"]
    for row, rows in top_contexts(column, text_index, n, window):
        acts = column[list(rows)].tolist()
        lines.append(f'<div style="font-family:monospace;white-space:pre">{column[row]:6.2f} '
                     f"{context_html([tokens[r] for r in rows], acts, row - rows.start, top)}</div>")
    return "\n".join(lines)


# --------------------------------------------------------------------------- an SAE inside the model


def replacing_hook(edit: Callable[[Tensor], Tensor]) -> Callable:
    """A forward hook that replaces a block's output hidden states ``h [batch, seq, d]`` by
    ``edit(h)``, so that every later block reads the edited residual stream.

    A block returns either the hidden states themselves (BERT in recent ``transformers``) or
    a tuple whose first item they are (GPT-2, older versions): the hook returns the same kind,
    any other items of the tuple untouched. Returning a value from a forward hook is what
    replaces a module's output (returning None keeps it).
    """
    def hook(module, inputs, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)
    return hook


@contextmanager
def edited_residual(model: nn.Module, layer: int, edit: Callable[[Tensor], Tensor] | None):
    """Within the ``with`` block, the residual stream after block ``layer`` (1-based, as in
    ``token_activations``) is replaced by ``edit`` of it; ``edit=None`` leaves the model alone."""
    handle = None if edit is None else \
        transformer_blocks(model)[layer - 1].register_forward_hook(replacing_hook(edit))
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


@torch.no_grad()
def sentence_embeddings(model: nn.Module, tokenizer, texts: Sequence[str], layer: int = 3,
                        edit: Callable[[Tensor], Tensor] | None = None, batch_size: int = 32,
                        max_length: int = 128) -> Float[Tensor, "texts d"]:
    """all-MiniLM-L6-v2's sentence embedding (the mean of the last hidden states over the real
    tokens, scaled to unit norm), optionally with the residual after block ``layer`` edited."""
    device = next(model.parameters()).device
    out = []
    with edited_residual(model, layer, edit):
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start: start + batch_size]), return_tensors="pt", padding=True,
                              truncation=True, max_length=max_length).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            out.append((mean / mean.norm(dim=-1, keepdim=True)).float().cpu())
    return torch.cat(out)


def retrieval_accuracy(queries: Float[Tensor, "n d"], keys: Float[Tensor, "n d"]) -> float:
    """The fraction of i for which key i is the nearest key to query i by cosine similarity
    (ties count as misses only if another key is strictly closer). Rows need not be unit."""
    queries = queries / queries.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    keys = keys / keys.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    cos = queries @ keys.T
    return (cos.argmax(dim=1) == torch.arange(len(cos), device=cos.device)).float().mean().item()


def fraction_recovered(spliced: float, ablated: float, clean: float = 1.0) -> float:
    """(spliced − ablated) / (clean − ablated): how much of the damage that ablating the
    layer does the SAE's reconstruction undoes (1: all of it, 0: none)."""
    return (spliced - ablated) / (clean - ablated)


def steer(hidden: Float[Tensor, "... d"], direction: Float[Tensor, "d"], strength: float) -> Float[Tensor, "... d"]:
    """hidden + strength · direction / ‖direction‖ at every position (a new tensor)."""
    return hidden + strength * direction / direction.norm()


def random_direction_like(direction: Float[Tensor, "d"], seed: int) -> Float[Tensor, "d"]:
    """A uniformly random direction with the norm of ``direction``, drawn on a CPU generator
    (the same on every device) and put on ``direction``'s device."""
    r = torch.randn(direction.shape, generator=torch.Generator().manual_seed(seed)).to(direction.device)
    return r * direction.norm() / r.norm()
