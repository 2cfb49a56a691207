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
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm


# --------------------------------------------------------------------------- the model


class SparseAutoencoder(nn.Module):
    """x ≈ decode(encode(x)) with a sparse, non-negative code.

    Parameters: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``b_dec [d_in]`` and, unless
    ``tied``, ``W_dec [d_sae, d_in]``. A tied SAE has no ``W_dec``: its decoder is
    ``W_enc.T``. With ``k`` set it is a TopK SAE: only the k largest pre-activations of
    each row survive.
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


@dataclass
class TrainedSAEs:
    """The result of ``train_saes``: one SAE per instance and their training curves.

    ``history`` holds, per logged step, ``[n_instances]`` tensors of the loss, L0 (active
    latents per row), FVE and the fraction of dead latents.
    """

    saes: list[SparseAutoencoder]
    history: dict[str, list[Tensor]]


def decoder_parameter(sae: SparseAutoencoder) -> tuple[str, int]:
    """Which stacked parameter holds the decoder rows, and along which dim they run."""
    return ("W_enc", -2) if sae.tied else ("W_dec", -1)


@torch.no_grad()
def normalise_decoder_(params: dict[str, Tensor], key: str, dim: int) -> None:
    """Rescale every decoder row (of every instance) to unit norm, in place."""
    params[key].div_(params[key].norm(dim=dim, keepdim=True).clamp(min=1e-8))


@torch.no_grad()
def resample_dead_latents(params: dict[str, Tensor], optimizer: torch.optim.Optimizer,
                          dead: Bool[Tensor, "inst d_sae"], x: Float[Tensor, "batch d_in"],
                          errors: Float[Tensor, "inst batch"], tied: bool,
                          generator: torch.Generator) -> int:
    """Give dead latents a new life (Anthropic, "Towards monosemanticity", 2023).

    For each instance, pick inputs with probability ∝ their squared reconstruction error;
    a dead latent's decoder row becomes the unit vector of one such input (minus b_dec), its
    encoder column the same vector scaled to 0.2 × the mean norm of the live encoder columns,
    its encoder bias 0; Adam's moments for those entries are reset. Returns how many
    latents were resampled.
    """
    total = 0
    for i in range(dead.shape[0]):
        latents = dead[i].nonzero().squeeze(-1)
        if len(latents) == 0:
            continue
        weights = errors[i].clamp(min=1e-12)
        rows = torch.multinomial(weights, len(latents), replacement=True, generator=generator)
        directions = x[rows] - params["b_dec"][i]
        directions = directions / directions.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        encoder_norm = params["W_enc"][i][:, ~dead[i]].norm(dim=0).mean() if (~dead[i]).any() else 1.0
        if tied:
            params["W_enc"][i][:, latents] = directions.T
        else:
            params["W_dec"][i][latents] = directions
            params["W_enc"][i][:, latents] = directions.T * 0.2 * encoder_norm
        params["b_enc"][i][latents] = 0.0
        for name in ("W_enc", "W_dec", "b_enc"):
            if name not in params:
                continue
            state = optimizer.state.get(params[name], {})
            for moment in ("exp_avg", "exp_avg_sq"):
                if moment in state:
                    view = state[moment][i]
                    if name == "W_enc":
                        view[:, latents] = 0.0
                    else:
                        view[latents] = 0.0
        total += len(latents)
    return total


def train_saes(make_sae: Callable[[], SparseAutoencoder], sample: Callable[[int, torch.Generator], Tensor],
               l1_coeffs: Sequence[float] | Tensor, steps: int = 2000, batch_size: int = 1024,
               lr: float = 1e-3, seed: int = 0, resample_every: int | None = None, dead_threshold: float = 1e-4,
               log_every: int = 50, progress: bool = True) -> TrainedSAEs:
    """Train ``len(l1_coeffs)`` SAEs at once, one per L1 coefficient, on the same batches.

    ``make_sae()`` builds one SAE (all instances share its shape, ``tied`` and ``k``);
    ``sample(batch_size, generator)`` returns a fresh ``[batch, d_in]`` batch. The instances'
    parameters are stacked (``[n_instances, ...]``) and one ``torch.func.vmap`` of the SAE's
    forward and ``sae_loss`` trains them all; Adam is per-entry, so the instances never
    interact. After every step each decoder row is rescaled to unit norm (otherwise the L1
    penalty could be dodged by shrinking z and growing the decoder). With
    ``resample_every``, every that many steps during the first three quarters of training,
    latents that fired on fewer than ``dead_threshold`` of the rows since the last check
    are counted as dead and resampled. ``history["dead"]`` is the fraction of latents under
    that threshold over each logging window.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    l1 = torch.as_tensor(l1_coeffs, dtype=torch.float32).reshape(-1)
    saes = [make_sae() for _ in range(len(l1))]
    params, buffers = stack_module_state(saes)
    base = copy.deepcopy(saes[0]).to("meta")
    key, dim = decoder_parameter(saes[0])
    normalise_decoder_(params, key, dim)
    optimizer = torch.optim.Adam(params.values(), lr=lr)

    def one_instance(p, b, l1_coeff, x):
        x_hat, z = functional_call(base, (p, b), (x,))
        return sae_loss(x, x_hat, z, l1_coeff), x_hat, z

    step_all = vmap(one_instance, in_dims=(0, 0, 0, None))
    # rows on which each latent fired, since the last resampling check and the last log
    fired_resample = torch.zeros(len(l1), saes[0].d_sae)
    fired_log = torch.zeros(len(l1), saes[0].d_sae)
    rows_resample = rows_log = 0
    history: dict[str, list[Tensor]] = {"step": [], "loss": [], "l0": [], "fve": [], "dead": []}
    for step in tqdm(range(steps), desc="training SAEs", disable=not progress, mininterval=1.0):
        x = sample(batch_size, generator)
        losses, x_hat, z = step_all(params, buffers, l1, x)
        losses.sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        normalise_decoder_(params, key, dim)
        with torch.no_grad():
            fired = (z > 0).float().sum(dim=1)
            fired_resample += fired
            fired_log += fired
            rows_resample += batch_size
            rows_log += batch_size
            if resample_every and (step + 1) % resample_every == 0:
                if step < 3 * steps // 4:
                    errors = (x_hat - x).pow(2).sum(-1)
                    dead = fired_resample / rows_resample < dead_threshold
                    resample_dead_latents(params, optimizer, dead, x, errors, saes[0].tied, generator)
                fired_resample.zero_()
                rows_resample = 0
            if step % log_every == 0 or step == steps - 1:
                history["step"].append(torch.tensor(step))
                history["loss"].append(losses.detach())
                history["l0"].append((z > 0).float().sum(-1).mean(-1))
                history["fve"].append(vmap(fraction_variance_explained, in_dims=(None, 0))(x, x_hat))
                history["dead"].append((fired_log / rows_log < dead_threshold).float().mean(-1))
                fired_log.zero_()
                rows_log = 0
    for i, sae in enumerate(saes):
        sae.load_state_dict({name: p[i].detach().clone() for name, p in params.items()})
    return TrainedSAEs(saes, history)


def dataset_sampler(data: Float[Tensor, "n d_in"]) -> Callable[[int, torch.Generator], Tensor]:
    """A ``sample(batch_size, generator)`` for ``train_saes`` that draws rows of a fixed dataset."""
    return lambda batch_size, generator: data[torch.randint(len(data), (batch_size,), generator=generator)]


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, x: Float[Tensor, "batch d_in"]) -> dict[str, float]:
    """FVE, L0 (mean active latents per row) and the fraction of latents that never fire on ``x``."""
    x_hat, z = sae(x)
    return {"fve": fraction_variance_explained(x, x_hat).item(),
            "l0": (z > 0).float().sum(-1).mean().item(),
            "dead": (firing_rates(z) == 0).float().mean().item()}


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
    """Parent/child features, for feature absorption.

    Feature 0 is the parent, features ``1..n_children`` its children, the rest are
    independent. Each row has at most one child, each child with probability
    ``child_prob``; whenever a child is active the parent is too ("snake" implies "starts
    with s"); the parent is also active alone with probability ``parent_alone_prob``. Active
    hierarchy features have magnitude Uniform[1 - spread, 1 + spread), each drawn on its own
    (spread 0: always exactly 1), independent ones Uniform[0, 1). Directions are
    orthonormal, so there is no superposition: any absorption comes from the L1 penalty.
    """

    features: Float[Tensor, "n_features d"]
    n_children: int
    child_prob: float
    parent_alone_prob: float
    other_prob: float
    spread: float = 0.0

    @property
    def cooccurrence(self) -> float:
        """P(some child | parent): how much of the parent's firing comes with a child."""
        with_child = self.n_children * self.child_prob
        return with_child / (with_child + (1 - with_child) * self.parent_alone_prob)

    def sample_coefficients(self, batch_size: int, generator: torch.Generator) -> Float[Tensor, "batch n_features"]:
        n = len(self.features)
        coeffs = torch.zeros(batch_size, n)
        u = torch.rand(batch_size, generator=generator)
        child = (u / self.child_prob).long()  # child c in [0, n_children) with probability child_prob each
        has_child = child < self.n_children
        rows = has_child.nonzero().squeeze(-1)
        coeffs[rows, 1 + child[rows]] = 1.0
        alone = torch.rand(batch_size, generator=generator) < self.parent_alone_prob
        coeffs[:, 0] = (has_child | alone).float()
        # each active hierarchy feature gets its own magnitude
        coeffs[:, : 1 + self.n_children] *= 1 + self.spread * (2 * torch.rand(batch_size, 1 + self.n_children, generator=generator) - 1)
        others = 1 + self.n_children
        active = torch.rand(batch_size, n - others, generator=generator) < self.other_prob
        coeffs[:, others:] = active * torch.rand(batch_size, n - others, generator=generator)
        return coeffs

    def sample(self, batch_size: int, generator: torch.Generator) -> Float[Tensor, "batch d"]:
        return self.sample_coefficients(batch_size, generator) @ self.features


def make_hierarchy(n_children: int = 3, n_other: int = 8, child_prob: float = 0.05,
                   parent_alone_prob: float = 0.05, other_prob: float = 0.05, spread: float = 0.0,
                   seed: int = 0) -> Hierarchy:
    """A parent, ``n_children`` children and ``n_other`` independent features, in as many
    dimensions (random orthonormal directions)."""
    g = torch.Generator().manual_seed(seed)
    n = 1 + n_children + n_other
    features, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    return Hierarchy(features, n_children, child_prob, parent_alone_prob, other_prob, spread)


def best_latents(sae: SparseAutoencoder, features: Float[Tensor, "n_features d"]) -> Int[Tensor, "n_features"]:
    """For each true feature, the latent whose decoder row has the highest cosine with it."""
    W = sae.decoder_directions().detach()
    W = W / W.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return (features @ W.T).argmax(dim=1)


@torch.no_grad()
def measure_absorption(sae: SparseAutoencoder, hierarchy: Hierarchy, n_rows: int = 20_000, seed: int = 1) -> dict[str, float]:
    """How much of the parent an SAE has folded into its children's latents.

    ``rate``: ``absorption_rate`` over fresh rows where a child is active, for the latent
    that best matches the parent's direction. ``decoder_cos``: the mean, over children, of
    the cosine between the parent's direction and the decoder row of the child's best
    latent (0 when the child latent is pure child, about 0.7 when it is parent + child).
    """
    coeffs = hierarchy.sample_coefficients(n_rows, torch.Generator().manual_seed(seed))
    _, z = sae(coeffs @ hierarchy.features)
    latents = best_latents(sae, hierarchy.features)
    child_active = (coeffs[:, 1: 1 + hierarchy.n_children] > 0).any(dim=1)
    W = sae.decoder_directions()
    children = latents[1: 1 + hierarchy.n_children]
    decoder_cos = (W[children] / W[children].norm(dim=-1, keepdim=True)) @ hierarchy.features[0]
    return {"rate": absorption_rate(z, int(latents[0]), child_active).item(),
            "decoder_cos": decoder_cos.mean().item()}


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
