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
    silent = (z[:, parent_latent] == 0) & child_active
    return silent.sum() / child_active.sum()
