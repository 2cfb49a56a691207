"""Hidden checks for chapter 4, sparse autoencoders.

Each case builds small inputs from its seed, calls the implementation under test, and
returns plain data; see ``utils.checks``. SAE parameters are set from the seed (with
``load_state_dict``, a method call, so that it also works on a handle to the student's
object), with a large decoder bias (so forgetting to subtract or add it shows),
pre-activations of both signs (so a missing ReLU shows), and rows of very different norms
for the cosine metrics.

Steps that need autograd, ``torch.func.vmap`` or a hook around the student's code run in
the student's process, through the public helpers of ``utils.student_side`` and
``utils.checks.gradients``; the cases themselves run in the grader's.
"""

import torch

from utils.checks import Suite, beyond, gradients
from utils.student_side import function_gradients, function_gradients_under_vmap, hooked_block_outputs, \
    sae_forward_under_vmap

suite = Suite("saes")


# --------------------------------------------------------------------------- inputs


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sae(impl, seed: int, d_in: int = 6, d_sae: int = 10, tied: bool = False, k=None, b_enc_shift: float = 0.0):
    """The student's SAE with every parameter set from the seed."""
    g = _generator(seed)
    values = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) * 0.6,
        "b_enc": torch.randn(d_sae, generator=g) * 0.3 + b_enc_shift,
        "b_dec": torch.randn(d_in, generator=g) * 1.5,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.6,
    }
    if tied:
        del values["W_dec"]
    sae = impl.SparseAutoencoder(d_in, d_sae, tied=tied, k=k)
    sae.load_state_dict(values)
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


@suite.case("SparseAutoencoder", "the attributes d_in, d_sae, tied and k, which the trainer reads",
            "keep the constructor's arguments as self.d_in, self.d_sae, self.tied and self.k, under "
            "exactly these names (train_saes and JumpReLUSAE read them)")
def _(impl, seed):
    out = []
    for args in [(5, 7, False, None), (4, 9, True, 3)]:
        sae = impl.SparseAutoencoder(args[0], args[1], tied=args[2], k=args[3])
        out.append({"d_in": sae.d_in, "d_sae": sae.d_sae, "tied": sae.tied, "k": sae.k})
    return out


def _unit_rows_zero_biases(result):
    norms, biases = result
    return beyond((norms - 1).abs().max().item(), 0.0, 1e-4, "the decoder rows do not start with unit norm") or \
        beyond(biases.abs().max().item(), 0.0, 1e-6, "the biases do not start at zero")


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
    # b_enc shifted down: some rows then have fewer than k positive pre-activations
    return _sae(impl, seed, k=3, b_enc_shift=-0.8).encode(_inputs(seed))


@suite.case("SparseAutoencoder", "forward (TopK) under torch.func.vmap, as the trainer runs it",
            "build the TopK code out of place (e.g. torch.zeros_like(pre).scatter(-1, indices, values)): "
            "vmap cannot batch in-place indexing with a mask such as z[pre < kth] = 0")
def _(impl, seed):
    x = torch.stack([_inputs(seed), _inputs(seed + 1)])
    return sae_forward_under_vmap(_sae(impl, seed, k=3, b_enc_shift=-0.8), x)


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
    sae.load_state_dict({"W_enc": torch.randn(6, 10, generator=_generator(seed + 3)),
                         "b_enc": torch.zeros(10), "b_dec": torch.zeros(6)})
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


# --------------------------------------------------------------------------- resample_dead_latents


def _resampling_inputs(seed: int, d_in: int = 5, d_sae: int = 12):
    """Parameters whose dead latents (1, 4, 7, 8) have huge encoder columns and negative biases,
    a large b_dec, and a pool in which only row 17 has a nonzero loss."""
    g = _generator(seed)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[[1, 4, 7, 8]] = True
    W_enc = torch.randn(d_in, d_sae, generator=g) * torch.exp(torch.randn(d_sae, generator=g))
    W_enc[:, dead] *= 50
    W_dec = torch.randn(d_sae, d_in, generator=g)
    b_enc = -1 - torch.rand(d_sae, generator=g)
    b_dec = 3 * torch.randn(d_in, generator=g)
    pool = torch.randn(30, d_in, generator=g) + 1
    pool_loss = torch.zeros(30)
    pool_loss[17] = 2.0
    return W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss


@suite.case("resample_dead_latents", "dead latents point at the only row with a loss; live ones untouched",
            "for each dead latent: u = (pool[j] - b_dec) / ‖pool[j] - b_dec‖ as its decoder row, "
            "u · 0.2 · (mean norm of the LIVE latents' encoder columns) as its encoder column, 0 as its "
            "encoder bias; rows with zero loss are never drawn; leave live latents alone")
def _(impl, seed):
    return tuple(impl.resample_dead_latents(*_resampling_inputs(seed), seed=seed))


@suite.case("resample_dead_latents", "no dead latent: nothing changes",
            "with no dead latent, return the parameters unchanged")
def _(impl, seed):
    W_enc, W_dec, b_enc, b_dec, dead, pool, pool_loss = _resampling_inputs(seed)
    return tuple(impl.resample_dead_latents(W_enc, W_dec, b_enc, b_dec, torch.zeros_like(dead), pool,
                                            pool_loss + 1, seed=seed))


_DRAWS, _POOL_HALF = 20_000, 100_000
_SQUARED_SHARE = 9 / 10  # two kinds of rows, losses 1 and 3: P(second kind) = 3² / (1² + 3²)


def _drawn_by_squared_loss(fraction):
    return beyond(fraction, _SQUARED_SHARE, 0.015,
                  f"the high-loss rows were drawn for {fraction:.1%} of the dead latents; with probability "
                  f"∝ loss² it should be about {_SQUARED_SHARE:.0%}")


@suite.case("resample_dead_latents", "rows are drawn with probability proportional to the squared loss",
            "draw each dead latent's row independently (torch.multinomial with replacement) with "
            "probability ∝ pool_loss² (not ∝ pool_loss, not always the worst row, not one row for all)",
            judges=[_drawn_by_squared_loss], compare=False)
def _(impl, seed):
    # two kinds of rows, along e1 with loss 1 and along e2 with loss 3; two live latents, the rest dead
    pool = torch.cat([torch.tensor([[1.0, 0.0]]).expand(_POOL_HALF, 2), torch.tensor([[0.0, 1.0]]).expand(_POOL_HALF, 2)])
    pool_loss = torch.cat([torch.ones(_POOL_HALF), 3 * torch.ones(_POOL_HALF)])
    dead = torch.ones(_DRAWS + 2, dtype=torch.bool)
    dead[:2] = False
    W_enc, W_dec, b_enc = torch.ones(2, _DRAWS + 2), torch.ones(_DRAWS + 2, 2), torch.zeros(_DRAWS + 2)
    _, W_dec, _ = impl.resample_dead_latents(W_enc, W_dec, b_enc, torch.zeros(2), dead, pool, pool_loss, seed=seed)
    return (W_dec[2:, 1] > 0.5).float().mean().item()


# --------------------------------------------------------------------------- JumpReLU and Step


_OFFSETS = torch.tensor([-1.6, -0.7, -0.3, 0.2, 0.4, 0.9])  # (pre - θ) / ε, none near ±1/2


def _threshold_inputs(seed: int, instances: int | None = None):
    """Thresholds θ ≠ 1, pre-activations at fixed offsets from them (inside and outside the
    window |pre - θ| < ε/2), and a random upstream gradient; ε = 0.2."""
    g = _generator(seed)
    shape = (instances,) if instances else ()
    threshold = 0.2 + torch.rand(*shape, 4, generator=g)
    offsets = _OFFSETS[torch.stack([torch.randperm(6, generator=g) for _ in range(4)], dim=1)]  # [6, 4]
    pre = threshold.unsqueeze(-2) + 0.2 * offsets
    upstream = torch.randn(pre.shape, generator=g)
    return pre, threshold, 0.2, upstream


@suite.case("JumpReLU", "value and straight-through gradients",
            "forward: pre · (pre > θ); backward: grad_pre = grad · (pre > θ), grad_threshold = "
            "-(θ/ε) · K · grad summed over the batch, with K = 1 where |pre - θ| < ε/2 (a window of "
            "width ε, not 2ε), else 0")
def _(impl, seed):
    return function_gradients(impl.JumpReLU, *_threshold_inputs(seed))


@suite.case("JumpReLU", "under torch.func.vmap, as the trainer runs it",
            "write forward without ctx, save tensors in a separate setup_context staticmethod, and keep "
            "generate_vmap_rule = True: vmap refuses the older forward(ctx, ...) style")
def _(impl, seed):
    return function_gradients_under_vmap(impl.JumpReLU, *_threshold_inputs(seed, instances=3))


@suite.case("Step", "value and straight-through gradients",
            "forward: (pre > θ) as floats; backward: no gradient to pre (zeros), grad_threshold = "
            "-(1/ε) · K · grad summed over the batch, with K = 1 where |pre - θ| < ε/2, else 0")
def _(impl, seed):
    return function_gradients(impl.Step, *_threshold_inputs(seed))


@suite.case("Step", "under torch.func.vmap, as the trainer runs it",
            "write forward without ctx, save tensors in a separate setup_context staticmethod, and keep "
            "generate_vmap_rule = True: vmap refuses the older forward(ctx, ...) style")
def _(impl, seed):
    return function_gradients_under_vmap(impl.Step, *_threshold_inputs(seed, instances=3))


# --------------------------------------------------------------------------- absorption_rate


@suite.case("absorption_rate", "parent latent silent when a child is active",
            "divide by the number of rows where a child is active (not all rows), and count the rows "
            "where the parent latent is 0")
def _(impl, seed):
    g = _generator(seed)
    z = torch.rand(60, 5, generator=g) * (torch.rand(60, 5, generator=g) < 0.5)
    child_active = torch.rand(60, generator=g) < 0.4
    return [impl.absorption_rate(z, latent, child_active).item() for latent in (0, 3)]


@suite.case("absorption_rate", "no row with an active child: a ValueError",
            "raise a ValueError when child_active has no True entry (the rate is undefined there; "
            "0/0 would return nan)")
def _(impl, seed):
    z = torch.rand(8, 5, generator=_generator(seed))
    return _error_name(lambda: impl.absorption_rate(z, 1, torch.zeros(8, dtype=torch.bool)))


# --------------------------------------------------------------------------- the SAE inside the model


@suite.case("replacing_hook", "replaces the hidden states of blocks that return a tensor or a tuple",
            "return edit(output) when the block returns a tensor, and (edit(output[0]), *output[1:]) when "
            "it returns a tuple: the same kind, the other items untouched; return it, don't return None")
def _(impl, seed):
    g = _generator(seed)
    weights = [torch.randn(5, 5, generator=g) / 2 for _ in range(3)]
    return hooked_block_outputs(impl.replacing_hook, torch.randn(4, 3, 5, generator=g), weights)


def _retrieval_inputs(seed: int):
    """Queries near their keys, keys of very different norms (one huge), so that dot products and
    cosines rank differently."""
    g = _generator(seed)
    keys = torch.randn(12, 8, generator=g) * torch.exp(torch.randn(12, 1, generator=g))
    keys[5] *= 100
    queries = keys / keys.norm(dim=-1, keepdim=True) + 0.35 * torch.randn(12, 8, generator=g)
    return queries * torch.exp(torch.randn(12, 1, generator=g)), keys


@suite.case("retrieval_accuracy", "keys and queries of very different norms",
            "compare by cosine (normalise queries and keys), take each query's best key (argmax over the "
            "keys, dim 1) and return the FRACTION of queries whose best key is their own, as a float")
def _(impl, seed):
    return impl.retrieval_accuracy(*_retrieval_inputs(seed))


@suite.case("retrieval_accuracy", "one key nearest to two queries",
            "for each QUERY find its nearest key (argmax along dim 1 of queries @ keys.T), not the "
            "nearest query of each key")
def _(impl, seed):
    keys = torch.eye(4)
    queries = torch.tensor([[1.0, 0.2, 0, 0], [0.9, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.3, 1.0]])
    return impl.retrieval_accuracy(queries, keys)


@suite.case("steer", "a direction of norm ≠ 1, added at every position",
            "add strength · direction / ‖direction‖ (normalise the direction) to every position of hidden")
def _(impl, seed):
    g = _generator(seed)
    direction = torch.randn(5, generator=g) * 7
    return impl.steer(torch.randn(2, 3, 5, generator=g), direction, 1.5), impl.steer(torch.randn(5, generator=g),
                                                                                    direction, -0.5)


test_hidden_check = suite.pytest_function()
