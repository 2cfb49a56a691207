"""Hidden checks for chapter 4, sparse autoencoders.

Each case builds small inputs from its seed, calls the implementation under test, and
returns plain data; see ``utils.checks``. SAE parameters are set explicitly from the seed,
with a large decoder bias (so forgetting to subtract or add it shows), pre-activations of
both signs (so a missing ReLU shows), and rows of very different norms for the cosine
metrics.
"""

import torch

from utils.checks import Suite, gradients

suite = Suite("saes")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sae(impl, seed: int, d_in: int = 6, d_sae: int = 10, tied: bool = False, k=None):
    """The student's SAE with every parameter set from the seed."""
    g = _generator(seed)
    sae = impl.SparseAutoencoder(d_in, d_sae, tied=tied, k=k)
    values = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) * 0.6,
        "b_enc": torch.randn(d_sae, generator=g) * 0.3,
        "b_dec": torch.randn(d_in, generator=g) * 1.5,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.6,
    }
    with torch.no_grad():
        for name, value in values.items():
            if name == "W_dec" and tied:
                continue
            getattr(sae, name).copy_(value)
    return sae


def _inputs(seed: int, batch: int = 9, d: int = 6) -> torch.Tensor:
    return torch.randn(batch, d, generator=_generator(seed + 100)) + 0.5


def _error_name(make) -> str:
    try:
        make()
    except ValueError:
        return "ValueError"
    return "no error"


# --------------------------------------------------------------------------- SparseAutoencoder


@suite.case("SparseAutoencoder", "parameter names and shapes, untied and tied",
            "W_enc [d_in, d_sae], b_enc [d_sae], b_dec [d_in], W_dec [d_sae, d_in]; a tied SAE has "
            "no W_dec parameter at all (its decoder is W_enc.T, the same tensor, not a copy)")
def _(impl, seed):
    return [sorted((name, tuple(p.shape)) for name, p in impl.SparseAutoencoder(5, 7, tied=tied).named_parameters())
            for tied in (False, True)]


def _unit_rows_zero_biases(result):
    norms, biases = result
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        return "the decoder rows do not start with unit norm"
    if biases.abs().max() > 0:
        return "the biases do not start at zero"
    return None


@suite.case("SparseAutoencoder", "initial decoder rows have unit norm, biases are zero",
            "initialise the decoder rows as random unit vectors and b_enc, b_dec as zeros",
            judges=[_unit_rows_zero_biases], compare=False)
def _(impl, seed):
    out = []
    for tied in (False, True):
        sae = impl.SparseAutoencoder(8, 20, tied=tied)
        W = sae.W_enc.T if tied else sae.W_dec
        out.append((W.detach().norm(dim=-1), torch.cat([sae.b_enc.detach(), sae.b_dec.detach()])))
    return (torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out]))


@suite.case("SparseAutoencoder", "encode (ReLU)",
            "z = ReLU((x - b_dec) @ W_enc + b_enc): subtract b_dec before the encoder, add b_enc "
            "after it, and apply the ReLU")
def _(impl, seed):
    return _sae(impl, seed).encode(_inputs(seed))


@suite.case("SparseAutoencoder", "encode (TopK) keeps the k largest pre-activations",
            "keep the k LARGEST pre-activations of each row (topk, largest=True), zero the rest, "
            "and apply the ReLU to what is kept")
def _(impl, seed):
    sae = _sae(impl, seed, k=3)
    with torch.no_grad():
        sae.b_enc -= 0.8  # some rows then have fewer than k positive pre-activations
    return sae.encode(_inputs(seed))


@suite.case("SparseAutoencoder", "decode",
            "x_hat = z @ W_dec + b_dec: don't forget the decoder bias")
def _(impl, seed):
    z = torch.rand(7, 10, generator=_generator(seed + 1)) * (torch.rand(7, 10, generator=_generator(seed + 2)) < 0.4)
    return _sae(impl, seed).decode(z)


@suite.case("SparseAutoencoder", "forward returns (x_hat, z)",
            "forward(x) encodes, then decodes, and returns the tuple (x_hat, z) in that order")
def _(impl, seed):
    x_hat, z = _sae(impl, seed)(_inputs(seed))
    return x_hat, z


@suite.case("SparseAutoencoder", "tied: the decoder is W_enc.T, and stays so when W_enc changes",
            "when tied, decode with self.W_enc.T itself (no separate W_dec parameter, no copy made "
            "in __init__), so training W_enc moves the decoder too")
def _(impl, seed):
    sae = _sae(impl, seed, tied=True)
    x = _inputs(seed)
    first = sae(x)[0]
    with torch.no_grad():
        sae.W_enc.mul_(-0.5).add_(0.1)
    return first, sae(x)[0]


@suite.case("SparseAutoencoder", "tied: gradients reach W_enc through the decoder",
            "use W_enc.T in the decoder without .detach() or .clone() so gradients flow through it")
def _(impl, seed):
    sae = _sae(impl, seed, tied=True)
    grad, = gradients(sae, _inputs(seed), wrt=("W_enc",), powers=(2, 0))  # Σ x_hat², z left out
    return grad


@suite.case("SparseAutoencoder", "bad input: k larger than d_sae, activations of the wrong width",
            "raise a ValueError that says what was wrong: in __init__ when k is not between 1 and "
            "d_sae, in encode when x.shape[-1] != d_in")
def _(impl, seed):
    sae = _sae(impl, seed)
    return [_error_name(lambda: impl.SparseAutoencoder(4, 3, k=5)),
            _error_name(lambda: sae.encode(torch.randn(5, 7))),
            _error_name(lambda: impl.SparseAutoencoder(4, 3, k=3))]


# --------------------------------------------------------------------------- sae_loss


def _loss_inputs(seed: int):
    g = _generator(seed)
    x = torch.randn(8, 6, generator=g)
    x_hat = x + 0.5 * torch.randn(8, 6, generator=g)
    z = torch.rand(8, 12, generator=g) * (torch.rand(8, 12, generator=g) < 0.3)
    return x, x_hat, z


@suite.case("sae_loss", "reconstruction plus L1, with l1_coeff = 0.3",
            "sum the squared error over d_in (don't average it), add l1_coeff times the sum of |z| "
            "over latents, and average both over the batch")
def _(impl, seed):
    return impl.sae_loss(*_loss_inputs(seed), 0.3).item()


@suite.case("sae_loss", "l1_coeff = 0 leaves the squared error alone; a tensor l1_coeff works too",
            "the reconstruction term is mean over the batch of the sum over d_in of (x - x_hat)²; "
            "l1_coeff may be a 0-d tensor")
def _(impl, seed):
    inputs = _loss_inputs(seed)
    return impl.sae_loss(*inputs, 0.0).item(), impl.sae_loss(*inputs, torch.tensor(2.0)).item()


# --------------------------------------------------------------------------- metrics


@suite.case("fraction_variance_explained", "features with very different means and scales",
            "FVE = 1 - Σ‖x - x̂‖² / Σ‖x - mean(x)‖²: centre each feature on its own mean over the "
            "batch (mean over dim 0), and sum both numerator and denominator over everything")
def _(impl, seed):
    g = _generator(seed)
    x = torch.randn(50, 5, generator=g) * torch.tensor([0.2, 1.0, 3.0, 0.5, 2.0]) + torch.tensor([4.0, -2.0, 0.0, 1.0, 6.0])
    x_hat = x + 0.3 * torch.randn(50, 5, generator=g)
    return impl.fraction_variance_explained(x, x_hat).item()


@suite.case("firing_rates", "fraction of rows where each latent is positive",
            "a latent fires when z > 0 (not >= 0); average over the batch (dim 0), one rate per latent")
def _(impl, seed):
    g = _generator(seed)
    z = torch.rand(40, 9, generator=g) * (torch.rand(40, 9, generator=g) < torch.linspace(0, 0.9, 9))
    return impl.firing_rates(z)


def _unnormalised(seed, n, d):
    g = _generator(seed)
    return torch.randn(n, d, generator=g) * torch.exp(torch.randn(n, 1, generator=g))


@suite.case("mean_max_cosine_similarity", "more learned directions than true ones, of varied norms",
            "for each TRUE direction take the max cosine over the learned ones, then average over the "
            "true directions; normalise both sets of rows first")
def _(impl, seed):
    true = _unnormalised(seed, 5, 6)
    learned = torch.cat([_unnormalised(seed + 1, 9, 6), 3 * true[:2] + 0.2 * _unnormalised(seed + 2, 2, 6)])
    return impl.mean_max_cosine_similarity(learned, true).item()


@suite.case("mean_max_cosine_similarity", "an anti-parallel direction is not a match",
            "use the signed cosine, not its absolute value: -v points away from v")
def _(impl, seed):
    true = _unnormalised(seed, 4, 6)
    learned = torch.cat([-true[:3], _unnormalised(seed + 3, 3, 6)])
    return impl.mean_max_cosine_similarity(learned, true).item()


@suite.case("absorption_rate", "parent latent silent when a child is active",
            "divide by the number of rows where a child is active (not all rows), and count the rows "
            "where the parent latent is 0")
def _(impl, seed):
    g = _generator(seed)
    z = torch.rand(60, 5, generator=g) * (torch.rand(60, 5, generator=g) < 0.5)
    child_active = torch.rand(60, generator=g) < 0.4
    return [impl.absorption_rate(z, latent, child_active).item() for latent in (0, 3)]


test_hidden_check = suite.pytest_function()
