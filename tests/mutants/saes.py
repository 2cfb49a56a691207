"""Deliberately wrong implementations of chapter 4's exercises (each must fail a check),
and correct alternatives written differently from the reference (each must pass)."""

import torch
import torch.nn.functional as F
from torch import nn

from solutions import saes as ref
from tests.mutants import Registry

mutants = Registry()
mutant, alternative = mutants.mutant, mutants.alternative


# --------------------------------------------------------------------------- SparseAutoencoder

@mutant("SparseAutoencoder", "b_dec not subtracted before encoding")
class _(ref.SparseAutoencoder):
    def encode(self, x):
        pre = x @ self.W_enc + self.b_enc
        if self.k is None:
            return pre.relu()
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())


@mutant("SparseAutoencoder", "no ReLU")
class _(ref.SparseAutoencoder):
    def encode(self, x):
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.k is None:
            return pre
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


@mutant("SparseAutoencoder", "top-k keeps the smallest pre-activations")
class _(ref.SparseAutoencoder):
    def encode(self, x):
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.k is None:
            return pre.relu()
        top = pre.topk(self.k, dim=-1, largest=False)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())


@mutant("SparseAutoencoder", "top-k without the ReLU on the kept values")
class _(ref.SparseAutoencoder):
    def encode(self, x):
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.k is None:
            return pre.relu()
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


@mutant("SparseAutoencoder", "top-k applied after the ReLU to the wrong dimension")
class _(ref.SparseAutoencoder):
    def encode(self, x):
        pre = ((x - self.b_dec) @ self.W_enc + self.b_enc).relu()
        if self.k is None:
            return pre
        top = pre.topk(min(self.k, pre.shape[0]), dim=0)
        return torch.zeros_like(pre).scatter(0, top.indices, top.values)


@mutant("SparseAutoencoder", "decoder bias missing")
class _(ref.SparseAutoencoder):
    def decode(self, z):
        return z @ self.decoder_directions()


@mutant("SparseAutoencoder", "forward returns (z, x_hat)")
class _(ref.SparseAutoencoder):
    def forward(self, x):
        z = self.encode(x)
        return z, self.decode(z)


@mutant("SparseAutoencoder", "tied weights not actually tied: a copy of W_enc.T made in __init__")
class _(ref.SparseAutoencoder):
    def __init__(self, d_in, d_sae, tied=False, k=None):
        super().__init__(d_in, d_sae, tied=False, k=k)
        self.tied = tied
        with torch.no_grad():
            self.W_dec.copy_(self.W_enc.T)

    def decoder_directions(self):
        return self.W_dec


@mutant("SparseAutoencoder", "tied flag ignored (always untied)")
class _(ref.SparseAutoencoder):
    def __init__(self, d_in, d_sae, tied=False, k=None):
        super().__init__(d_in, d_sae, tied=False, k=k)


@mutant("SparseAutoencoder", "tied decoder detached from W_enc")
class _(ref.SparseAutoencoder):
    def decoder_directions(self):
        return self.W_enc.T.detach() if self.tied else self.W_dec


@mutant("SparseAutoencoder", "decoder rows not unit norm at initialisation")
class _(ref.SparseAutoencoder):
    def __init__(self, d_in, d_sae, tied=False, k=None):
        super().__init__(d_in, d_sae, tied=tied, k=k)
        with torch.no_grad():
            self.W_enc.copy_(torch.randn(d_in, d_sae))
            if not tied:
                self.W_dec.copy_(torch.randn(d_sae, d_in))


@mutant("SparseAutoencoder", "k larger than d_sae accepted (topk fails later, deep inside torch)")
class _(ref.SparseAutoencoder):
    def __init__(self, d_in, d_sae, tied=False, k=None):
        super().__init__(d_in, d_sae, tied=tied, k=None)
        self.k = k


@mutant("SparseAutoencoder", "no check of the activations' width")
class _(ref.SparseAutoencoder):
    def encode(self, x):
        pre = (x[..., : self.d_in] - self.b_dec) @ self.W_enc + self.b_enc
        if self.k is None:
            return pre.relu()
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())


@alternative("SparseAutoencoder", "nn.Linear-free einsum version, TopK by a threshold mask")
class _(nn.Module):
    def __init__(self, d_in, d_sae, tied=False, k=None):
        super().__init__()
        if k is not None and (k > d_sae or k < 1):
            raise ValueError("k must be in [1, d_sae]")
        self.d_in, self.d_sae, self.tied, self.k = d_in, d_sae, tied, k
        W = F.normalize(torch.randn(d_sae, d_in), dim=1)
        self.W_enc = nn.Parameter(W.T.contiguous())
        if not tied:
            self.W_dec = nn.Parameter(W.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x):
        if x.shape[-1] != self.d_in:
            raise ValueError("wrong width")
        pre = torch.einsum("bd,ds->bs", x - self.b_dec, self.W_enc) + self.b_enc
        if self.k is not None:
            kth = pre.topk(self.k, dim=-1).values[..., -1:]
            pre = torch.where(pre >= kth, pre, torch.zeros_like(pre))
        return F.relu(pre)

    def decode(self, z):
        W_dec = self.W_enc.t() if self.tied else self.W_dec
        return torch.einsum("bs,sd->bd", z, W_dec) + self.b_dec

    def forward(self, x):
        z = self.encode(x)
        return self.decode(z), z


# --------------------------------------------------------------------------- sae_loss

@mutant("sae_loss", "MSE averaged over d_in instead of summed")
def _(x, x_hat, z, l1_coeff):
    return F.mse_loss(x_hat, x) + l1_coeff * z.abs().sum(-1).mean()


@mutant("sae_loss", "L1 coefficient ignored")
def _(x, x_hat, z, l1_coeff):
    return (x - x_hat).pow(2).sum(-1).mean() + z.abs().sum(-1).mean()


@mutant("sae_loss", "summed over the batch instead of averaged")
def _(x, x_hat, z, l1_coeff):
    return (x - x_hat).pow(2).sum() + l1_coeff * z.abs().sum()


@mutant("sae_loss", "L2 norm of the reconstruction error instead of its square")
def _(x, x_hat, z, l1_coeff):
    return (x - x_hat).norm(dim=-1).mean() + l1_coeff * z.abs().sum(-1).mean()


@mutant("sae_loss", "L1 averaged over latents instead of summed")
def _(x, x_hat, z, l1_coeff):
    return (x - x_hat).pow(2).sum(-1).mean() + l1_coeff * z.abs().mean()


@alternative("sae_loss", "F.mse_loss(reduction='sum') and a norm, divided by the batch size")
def _(x, x_hat, z, l1_coeff):
    return (F.mse_loss(x_hat, x, reduction="sum") + l1_coeff * z.norm(p=1)) / x.shape[0]


# --------------------------------------------------------------------------- metrics

@mutant("fraction_variance_explained", "not centred: divides by Σ‖x‖²")
def _(x, x_hat):
    return 1 - (x - x_hat).pow(2).sum() / x.pow(2).sum()


@mutant("fraction_variance_explained", "centred on the global mean, not per feature")
def _(x, x_hat):
    return 1 - (x - x_hat).pow(2).sum() / (x - x.mean()).pow(2).sum()


@mutant("fraction_variance_explained", "averages per-feature FVEs")
def _(x, x_hat):
    return (1 - (x - x_hat).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean()


@alternative("fraction_variance_explained", "via torch.var (the 1/(n-1) factors cancel)")
def _(x, x_hat):
    n = x.shape[0]
    return 1 - F.mse_loss(x_hat, x, reduction="sum") / (x.var(dim=0) * (n - 1)).sum()


@mutant("firing_rates", "counts z >= 0 as firing")
def _(z):
    return (z >= 0).float().mean(0)


@mutant("firing_rates", "mean activation instead of the firing fraction")
def _(z):
    return z.mean(0)


@alternative("firing_rates", "count_nonzero divided by the batch size")
def _(z):
    return torch.count_nonzero(z.clamp(min=0), dim=0) / z.shape[0]


@mutant("mean_max_cosine_similarity", "MMCS maximised over the wrong side (mean over learned)")
def _(learned, true):
    return ref.mean_max_cosine_similarity(true, learned)


@mutant("mean_max_cosine_similarity", "dot products, rows not normalised")
def _(learned, true):
    return (true @ learned.T).max(dim=1).values.mean()


@mutant("mean_max_cosine_similarity", "absolute cosine")
def _(learned, true):
    cos = F.normalize(true, dim=1) @ F.normalize(learned, dim=1).T
    return cos.abs().max(dim=1).values.mean()


@alternative("mean_max_cosine_similarity", "F.cosine_similarity with broadcasting")
def _(learned, true):
    return F.cosine_similarity(true[:, None, :], learned[None, :, :], dim=-1).amax(dim=1).mean()


@mutant("absorption_rate", "divides by all rows")
def _(z, parent_latent, child_active):
    return ((z[:, parent_latent] <= 0) & child_active).float().sum() / len(z)


@mutant("absorption_rate", "counts the rows where the parent fires")
def _(z, parent_latent, child_active):
    return (z[child_active, parent_latent] > 0).float().mean()


@alternative("absorption_rate", "a ratio of counts")
def _(z, parent_latent, child_active):
    if child_active.sum() == 0:
        raise ValueError("absorption is undefined without a row where a child is active")
    silent = (z[:, parent_latent] == 0) & child_active
    return silent.sum() / child_active.sum()


@mutant("absorption_rate", "no ValueError when no child is active (returns nan)")
def _(z, parent_latent, child_active):
    return (z[child_active, parent_latent] <= 0).float().mean()


# --------------------------------------------------------------------------- what the given code relies on

@mutant("SparseAutoencoder", "TopK by in-place masked assignment, z[pre < kth] = 0 (fails under vmap)")
class _(ref.SparseAutoencoder):
    def encode(self, x):
        if x.shape[-1] != self.d_in:
            raise ValueError("wrong width")
        z = ((x - self.b_dec) @ self.W_enc + self.b_enc).relu()
        if self.k is not None:
            kth = z.topk(self.k, dim=-1).values[..., -1:]
            z[z < kth] = 0
        return z


@mutant("SparseAutoencoder", "attributes renamed (n_latents, is_tied, top_k)")
class _(nn.Module):
    def __init__(self, d_in, d_sae, tied=False, k=None):
        super().__init__()
        if k is not None and not 1 <= k <= d_sae:
            raise ValueError("k must be in [1, d_sae]")
        self.d_in, self.n_latents, self.is_tied, self.top_k = d_in, d_sae, tied, k
        W = F.normalize(torch.randn(d_sae, d_in), dim=1)
        self.W_enc = nn.Parameter(W.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if not tied:
            self.W_dec = nn.Parameter(W.clone())

    def decoder_directions(self):
        return self.W_enc.T if self.is_tied else self.W_dec

    def encode(self, x):
        if x.shape[-1] != self.d_in:
            raise ValueError("wrong width")
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.top_k is None:
            return pre.relu()
        top = pre.topk(self.top_k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, z):
        return z @ self.decoder_directions() + self.b_dec

    def forward(self, x):
        z = self.encode(x)
        return self.decode(z), z


# --------------------------------------------------------------------------- resample_dead_latents

def _resample(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed, *, weights=None, subtract_b_dec=True,
              scale=0.2, norm_over="live", reset_bias=True, normalise=True, rows=None, latents=None):
    """The reference recipe with one ingredient swappable, for the mutants below."""
    W_enc, W_dec, b_enc = W_enc.clone(), W_dec.clone(), b_enc.clone()
    latents = dead.nonzero().squeeze(-1) if latents is None else latents
    if len(latents) == 0:
        return W_enc, W_dec, b_enc
    weights = pool_loss.double().pow(2) if weights is None else weights
    generator = torch.Generator().manual_seed(seed)
    if rows is None:
        rows = torch.multinomial(weights, len(latents), replacement=True, generator=generator)
    directions = pool[rows] - (b_dec if subtract_b_dec else 0)
    if normalise:
        directions = directions / directions.norm(dim=-1, keepdim=True)
    columns = W_enc[:, ~dead] if norm_over == "live" else W_enc
    W_dec[latents] = directions
    W_enc[:, latents] = directions.T * scale * (columns.norm(dim=0).mean() if scale != 1 else 1)
    if reset_bias:
        b_enc[latents] = 0.0
    return W_enc, W_dec, b_enc


@mutant("resample_dead_latents", "b_dec not subtracted from the drawn input")
def _(*args, seed):
    return _resample(*args, seed, subtract_b_dec=False)


@mutant("resample_dead_latents", "encoder column left at unit norm (no 0.2 · mean live norm)")
def _(*args, seed):
    return _resample(*args, seed, scale=1)


@mutant("resample_dead_latents", "mean encoder norm over all latents, dead ones included")
def _(*args, seed):
    return _resample(*args, seed, norm_over="all")


@mutant("resample_dead_latents", "encoder bias of the dead latents not reset to 0")
def _(*args, seed):
    return _resample(*args, seed, reset_bias=False)


@mutant("resample_dead_latents", "decoder row not normalised")
def _(*args, seed):
    return _resample(*args, seed, normalise=False)


@mutant("resample_dead_latents", "every latent resampled, live ones too")
def _(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed):
    everything = torch.ones_like(dead)
    new = _resample(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed, latents=everything.nonzero().squeeze(-1))
    return new if dead.any() else (W_enc, W_dec, b_enc)


@mutant("resample_dead_latents", "rows drawn with probability ∝ loss, not loss²")
def _(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed):
    return _resample(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed, weights=pool_loss.double())


@mutant("resample_dead_latents", "always the row with the largest loss")
def _(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed):
    rows = pool_loss.argmax().repeat(int(dead.sum()))
    return _resample(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed, rows=rows)


@mutant("resample_dead_latents", "one row drawn and shared by every dead latent")
def _(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed):
    row = torch.multinomial(pool_loss.double().pow(2), 1, generator=torch.Generator().manual_seed(seed))
    return _resample(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed, rows=row.repeat(int(dead.sum())))


@alternative("resample_dead_latents", "inverse-CDF sampling with torch.rand and searchsorted, torch.where updates")
def _(W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss, seed):
    n = int(dead.sum())
    if n == 0:
        return W_enc.clone(), W_dec.clone(), b_enc.clone()
    cdf = pool_loss.double().pow(2).cumsum(0)
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * cdf[-1]
    rows = torch.searchsorted(cdf, u, right=True).clamp(max=len(pool) - 1)
    directions = F.normalize(pool[rows] - b_dec, dim=-1)
    gain = 0.2 * torch.linalg.vector_norm(W_enc[:, ~dead], dim=0).mean()
    new_dec, new_enc = W_dec.clone(), W_enc.clone()
    new_dec[dead] = directions
    new_enc[:, dead] = gain * directions.T
    return new_enc, new_dec, torch.where(dead, torch.zeros_like(b_enc), b_enc)


# --------------------------------------------------------------------------- JumpReLU and Step

def _window(pre, threshold, bandwidth, width=0.5):
    return ((pre - threshold).abs() < width * bandwidth).to(pre.dtype)


def _threshold_function(forward, grad_pre, grad_threshold):
    """An autograd.Function in the vmap-ready style from three small formulas."""
    class Function(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(pre, threshold, bandwidth):
            return forward(pre, threshold)

        @staticmethod
        def setup_context(ctx, inputs, output):
            pre, threshold, bandwidth = inputs
            ctx.save_for_backward(pre, threshold)
            ctx.bandwidth = bandwidth

        @staticmethod
        def backward(ctx, grad):
            pre, threshold = ctx.saved_tensors
            g_threshold = grad_threshold(pre, threshold, ctx.bandwidth, grad)
            return grad_pre(pre, threshold, grad), g_threshold.sum_to_size(threshold.shape), None
    return Function


_jump = lambda pre, threshold: pre * (pre > threshold)  # noqa: E731
_pass_above = lambda pre, threshold, grad: grad * (pre > threshold)  # noqa: E731
_jump_threshold = lambda pre, threshold, bandwidth, grad: -(threshold / bandwidth) * _window(pre, threshold, bandwidth) * grad  # noqa: E731,E501

mutant("JumpReLU", "forward is a ReLU (no jump: small pre-activations below θ pass)")(
    _threshold_function(lambda pre, threshold: pre.relu(), _pass_above, _jump_threshold))
mutant("JumpReLU", "threshold gradient without the factor θ (the Step's estimator)")(
    _threshold_function(_jump, _pass_above, lambda p, t, b, g: -(1 / b) * _window(p, t, b) * g))
mutant("JumpReLU", "threshold gradient with the wrong sign")(
    _threshold_function(_jump, _pass_above, lambda p, t, b, g: -_jump_threshold(p, t, b, g)))
mutant("JumpReLU", "kernel window |pre - θ| < ε instead of ε/2")(
    _threshold_function(_jump, _pass_above, lambda p, t, b, g: -(t / b) * _window(p, t, b, width=1.0) * g))
mutant("JumpReLU", "gradient passed to pre everywhere, even where the output is 0")(
    _threshold_function(_jump, lambda pre, threshold, grad: grad, _jump_threshold))


@alternative("JumpReLU", "threshold gradient left at the batch's shape (autograd sums it back to θ's shape)")
class _(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(pre, threshold, bandwidth):
        return pre * (pre > threshold)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.bandwidth = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        return grad * (pre > threshold), -(threshold / ctx.bandwidth) * _window(pre, threshold, ctx.bandwidth) * grad, None


@mutant("JumpReLU", "old-style forward(ctx, ...): right values, but vmap refuses it")
class _(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        g_threshold = -(threshold / ctx.bandwidth) * _window(pre, threshold, ctx.bandwidth) * grad
        return grad * (pre > threshold), g_threshold.sum_to_size(threshold.shape), None


@alternative("JumpReLU", "torch.where, the window as (pre - θ)/ε, the threshold gradient summed by reshape")
class _(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(pre, threshold, bandwidth):
        return torch.where(pre > threshold, pre, torch.zeros_like(pre))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pre, threshold, bandwidth = inputs
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        inside = (((pre - threshold) / ctx.bandwidth).abs() < 0.5).to(grad.dtype)
        g_threshold = (-threshold / ctx.bandwidth * inside * grad).reshape(-1, threshold.shape[-1]).sum(0)
        return torch.where(pre > threshold, grad, torch.zeros_like(grad)), g_threshold, None


_step = lambda pre, threshold: (pre > threshold).to(pre.dtype)  # noqa: E731
_no_grad = lambda pre, threshold, grad: torch.zeros_like(pre)  # noqa: E731
_step_threshold = lambda pre, threshold, bandwidth, grad: -(1 / bandwidth) * _window(pre, threshold, bandwidth) * grad  # noqa: E731,E501

mutant("Step", "gradient passed straight through to pre")(_threshold_function(_step, lambda p, t, g: g, _step_threshold))
mutant("Step", "threshold gradient with the JumpReLU's factor θ")(_threshold_function(_step, _no_grad, _jump_threshold))
mutant("Step", "forward returns the JumpReLU's output, not the 0/1 step")(
    _threshold_function(_jump, _no_grad, _step_threshold))
mutant("Step", "threshold gradient with the wrong sign")(
    _threshold_function(_step, _no_grad, lambda p, t, b, g: -_step_threshold(p, t, b, g)))


@alternative("Step", "saves pre - θ only; the threshold gradient via sum_to_size")
class _(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(pre, threshold, bandwidth):
        return (pre - threshold > 0).float()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pre, threshold, bandwidth = inputs
        ctx.save_for_backward(pre - threshold)
        ctx.threshold_shape, ctx.bandwidth = threshold.shape, bandwidth

    @staticmethod
    def backward(ctx, grad):
        gap, = ctx.saved_tensors
        inside = (gap.abs() < ctx.bandwidth / 2).float()
        return grad * 0, (-inside * grad / ctx.bandwidth).sum_to_size(ctx.threshold_shape), None


# --------------------------------------------------------------------------- replacing_hook, retrieval_accuracy, steer

@mutant("replacing_hook", "returns only the edited tensor when the block returned a tuple")
def _(edit):
    def hook(module, inputs, output):
        return edit(output[0] if isinstance(output, tuple) else output)
    return hook


@mutant("replacing_hook", "edits a copy and returns nothing (the output is not replaced)")
def _(edit):
    def hook(module, inputs, output):
        edit(output[0] if isinstance(output, tuple) else output)
    return hook


@mutant("replacing_hook", "drops the other items of a tuple output")
def _(edit):
    def hook(module, inputs, output):
        return (edit(output[0]),) if isinstance(output, tuple) else edit(output)
    return hook


@mutant("replacing_hook", "edits the block's input instead of its output")
def _(edit):
    def hook(module, inputs, output):
        return (edit(inputs[0]), *output[1:]) if isinstance(output, tuple) else edit(inputs[0])
    return hook


@alternative("replacing_hook", "rebuilds a tuple through a list")
def _(edit):
    def hook(module, inputs, output):
        if not isinstance(output, tuple):
            return edit(output)
        items = list(output)
        items[0] = edit(items[0])
        return tuple(items)
    return hook


@mutant("retrieval_accuracy", "dot products instead of cosines")
def _(queries, keys):
    return ((queries @ keys.T).argmax(1) == torch.arange(len(keys))).float().mean().item()


@mutant("retrieval_accuracy", "argmax over the queries (dim 0) instead of the keys")
def _(queries, keys):
    cos = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T
    return (cos.argmax(0) == torch.arange(len(keys))).float().mean().item()


@mutant("retrieval_accuracy", "a count instead of a fraction")
def _(queries, keys):
    cos = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T
    return float((cos.argmax(1) == torch.arange(len(keys))).sum())


@alternative("retrieval_accuracy", "F.cosine_similarity with broadcasting, diagonal against row max")
def _(queries, keys):
    cos = F.cosine_similarity(queries[:, None, :], keys[None, :, :], dim=-1)
    return (cos.diagonal() >= cos.max(dim=1).values).float().mean().item()


@mutant("steer", "direction not normalised")
def _(hidden, direction, strength):
    return hidden + strength * direction


@mutant("steer", "subtracts the direction")
def _(hidden, direction, strength):
    return hidden - strength * direction / direction.norm()


@mutant("steer", "only the first position steered")
def _(hidden, direction, strength):
    if hidden.dim() == 1:
        return hidden + strength * direction / direction.norm()
    out = hidden.clone()
    out[..., 0, :] = out[..., 0, :] + strength * direction / direction.norm()
    return out


@alternative("steer", "F.normalize and an explicit broadcast")
def _(hidden, direction, strength):
    return hidden + (strength * F.normalize(direction, dim=0)).expand_as(hidden)
