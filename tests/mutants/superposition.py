"""Deliberately wrong implementations of chapter 3's exercises (each must fail a check),
and correct alternatives written differently from the reference (each must pass)."""

import math

import torch
from torch import nn

from solutions import superposition as ref
from tests.mutants import Registry

mutants = Registry()
mutant, alternative = mutants.mutant, mutants.alternative


# --------------------------------------------------------------------------- generate_sparse_features

def _sparse(batch_size, n_instances, n_features, feature_probability, generator, fires_with=None,
            values=None):
    p = torch.as_tensor(feature_probability, dtype=torch.float32).expand(n_instances, n_features)
    shape = (batch_size, n_instances, n_features)
    draw = torch.rand(shape, generator=generator)
    fires = fires_with(draw, p) if fires_with else draw < p
    value = values(shape, generator, draw) if values else torch.rand(shape, generator=generator)
    return torch.where(fires, value, 0.0)


@mutant("generate_sparse_features", "fires with probability 1 - p")
def _(batch_size, n_instances, n_features, feature_probability, generator=None):
    return _sparse(batch_size, n_instances, n_features, feature_probability, generator,
                   fires_with=lambda draw, p: draw > p)


@mutant("generate_sparse_features", "values are not Uniform[0, 1) (always 1)")
def _(batch_size, n_instances, n_features, feature_probability, generator=None):
    return _sparse(batch_size, n_instances, n_features, feature_probability, generator,
                   values=lambda shape, g, draw: torch.ones(shape))


@mutant("generate_sparse_features", "values Uniform[0, 2)")
def _(batch_size, n_instances, n_features, feature_probability, generator=None):
    return _sparse(batch_size, n_instances, n_features, feature_probability, generator,
                   values=lambda shape, g, draw: 2 * torch.rand(shape, generator=g))


@mutant("generate_sparse_features", "values |N(0, 1)|")
def _(batch_size, n_instances, n_features, feature_probability, generator=None):
    return _sparse(batch_size, n_instances, n_features, feature_probability, generator,
                   values=lambda shape, g, draw: torch.randn(shape, generator=g).abs())


@mutant("generate_sparse_features", "the firing draw reused as the value (values in [0, p))")
def _(batch_size, n_instances, n_features, feature_probability, generator=None):
    return _sparse(batch_size, n_instances, n_features, feature_probability, generator,
                   values=lambda shape, g, draw: draw)


@mutant("generate_sparse_features", "ignores the generator (global RNG)")
def _(batch_size, n_instances, n_features, feature_probability, generator=None):
    return _sparse(batch_size, n_instances, n_features, feature_probability, None)


@mutant("generate_sparse_features", "one firing decision per batch row, shared by all features")
def _(batch_size, n_instances, n_features, feature_probability, generator=None):
    p = torch.as_tensor(feature_probability, dtype=torch.float32).expand(n_instances, n_features)
    fires = torch.rand(batch_size, 1, 1, generator=generator) < p
    return torch.where(fires, torch.rand(fires.shape, generator=generator), 0.0)


@alternative("generate_sparse_features", "Bernoulli mask times uniform values")
def _(batch_size, n_instances, n_features, feature_probability, generator=None):
    p = torch.as_tensor(feature_probability, dtype=torch.float32) * torch.ones(n_instances, n_features)
    mask = torch.bernoulli(p.expand(batch_size, -1, -1), generator=generator)
    return mask * torch.rand(batch_size, n_instances, n_features, generator=generator)


# --------------------------------------------------------------------------- ToyModel

class _Toy(nn.Module):
    """A toy model with switches for each mistake."""

    relu_output, bias, transpose_back, init_std = True, True, False, None

    def __init__(self, n_features, d_hidden, n_instances=1, relu=True, generator=None):
        super().__init__()
        self.n_features, self.d_hidden, self.n_instances, self.relu = n_features, d_hidden, n_instances, relu
        std = self.init_std or math.sqrt(2 / (d_hidden + n_features))
        self.W = nn.Parameter(std * torch.randn(n_instances, d_hidden, n_features, generator=generator))
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def hidden(self, x):
        return torch.einsum("ihf,bif->bih", self.W, x)

    def forward(self, x):
        if self.transpose_back:  # W Wᵀ x: only runs when W is square
            out = torch.einsum("ifh,bih->bif", self.W, torch.einsum("ifh,bih->bif", self.W, x))
        else:
            out = torch.einsum("ihf,bih->bif", self.W, self.hidden(x))
        out = out + self.b_final if self.bias else out
        return torch.relu(out) if self.relu and self.relu_output else out


@mutant("ToyModel", "no ReLU")
class _(_Toy):
    relu_output = False


@mutant("ToyModel", "missing bias")
class _(_Toy):
    bias = False


@mutant("ToyModel", "W Wᵀ x instead of Wᵀ W x")
class _(_Toy):
    transpose_back = True


@mutant("ToyModel", "ReLU before the bias")
class _(_Toy):
    def forward(self, x):
        return torch.relu(torch.einsum("ihf,bih->bif", self.W, self.hidden(x))) + self.b_final


@mutant("ToyModel", "every instance uses the first instance's W")
class _(_Toy):
    def hidden(self, x):
        return torch.einsum("hf,bif->bih", self.W[0], x)

    def forward(self, x):
        return torch.relu(torch.einsum("hf,bih->bif", self.W[0], self.hidden(x)) + self.b_final)


@mutant("ToyModel", "W stored as [n_instances, n_features, d_hidden]")
class _(_Toy):
    def __init__(self, n_features, d_hidden, n_instances=1, relu=True, generator=None):
        super().__init__(n_features, d_hidden, n_instances, relu, generator)
        self.W = nn.Parameter(torch.randn(n_instances, n_features, d_hidden, generator=generator) * 0.3)

    def hidden(self, x):
        return torch.einsum("ifh,bif->bih", self.W, x)

    def forward(self, x):
        return torch.relu(torch.einsum("ifh,bih->bif", self.W, self.hidden(x)) + self.b_final)


@mutant("ToyModel", "output detached from the parameters")
class _(_Toy):
    def forward(self, x):
        return super().forward(x).detach().requires_grad_()


@mutant("ToyModel", "initialised with std 1")
class _(_Toy):
    init_std = 1.0


@mutant("ToyModel", "initialised with std sqrt(1 / n_features) (fan-in only)")
class _(_Toy):
    def __init__(self, n_features, d_hidden, n_instances=1, relu=True, generator=None):
        self.init_std = math.sqrt(1 / n_features)
        super().__init__(n_features, d_hidden, n_instances, relu, generator)


@mutant("ToyModel", "the generator is not used (global RNG)")
class _(_Toy):
    def __init__(self, n_features, d_hidden, n_instances=1, relu=True, generator=None):
        super().__init__(n_features, d_hidden, n_instances, relu)


@mutant("ToyModel", "b_final starts at random values")
class _(_Toy):
    def __init__(self, n_features, d_hidden, n_instances=1, relu=True, generator=None):
        super().__init__(n_features, d_hidden, n_instances, relu, generator)
        self.b_final = nn.Parameter(0.1 * torch.randn(n_instances, n_features))


@alternative("ToyModel", "batched matrix products instead of einsum, nn.init on a generator")
class _(nn.Module):
    def __init__(self, n_features, d_hidden, n_instances=1, relu=True, generator=None):
        super().__init__()
        self.n_features, self.d_hidden, self.n_instances, self.relu = n_features, d_hidden, n_instances, relu
        W = torch.empty(n_instances, d_hidden, n_features)
        self.W = nn.Parameter(nn.init.normal_(W, std=math.sqrt(2 / (d_hidden + n_features)), generator=generator))
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def hidden(self, x):
        return (self.W @ x.permute(1, 2, 0)).permute(2, 0, 1)

    def forward(self, x):
        out = (self.W.transpose(1, 2) @ self.hidden(x).permute(1, 2, 0)).permute(2, 0, 1) + self.b_final
        return out.clamp(min=0) if self.relu else out


# --------------------------------------------------------------------------- NeuronModel

@mutant("NeuronModel", "no ReLU on the hidden layer (ToyModel's hidden)")
class _(ref.ToyModel):
    pass


@mutant("NeuronModel", "ReLU added in forward; hidden() left linear")
class _(ref.ToyModel):
    def forward(self, x):
        h = torch.relu(super().hidden(x))
        return torch.relu(torch.einsum("ihf,bih->bif", self.W, h) + self.b_final)


@mutant("NeuronModel", "ReLU of the weights: ReLU(W) x")
class _(ref.ToyModel):
    def hidden(self, x):
        return torch.einsum("ihf,bif->bih", torch.relu(self.W), x)


@alternative("NeuronModel", "clamp on a batched matrix product")
class _(ref.ToyModel):
    def hidden(self, x):
        return (self.W @ x.permute(1, 2, 0)).permute(2, 0, 1).clamp(min=0)


# --------------------------------------------------------------------------- importance_weighted_loss

@mutant("importance_weighted_loss", "importance ignored")
def _(x, x_hat, importance):
    return ((x - x_hat) ** 2).mean(dim=(0, 2))


@mutant("importance_weighted_loss", "mean over instances (wrong reduction axis)")
def _(x, x_hat, importance):
    return (importance * (x - x_hat) ** 2).mean(dim=(0, 1))


@mutant("importance_weighted_loss", "one number: mean over everything")
def _(x, x_hat, importance):
    return (importance * (x - x_hat) ** 2).mean()


@mutant("importance_weighted_loss", "summed over features instead of averaged")
def _(x, x_hat, importance):
    return (importance * (x - x_hat) ** 2).sum(-1).mean(0)


@mutant("importance_weighted_loss", "importance squared: (importance · (x - x̂))²")
def _(x, x_hat, importance):
    return ((importance * (x - x_hat)) ** 2).mean(dim=(0, 2))


@mutant("importance_weighted_loss", "absolute error")
def _(x, x_hat, importance):
    return (importance * (x - x_hat).abs()).mean(dim=(0, 2))


@mutant("importance_weighted_loss", "x.sub_(x_hat): the batch changed in place")
def _(x, x_hat, importance):
    return (torch.as_tensor(importance) * x.sub_(x_hat) ** 2).mean(dim=(0, 2))


@alternative("importance_weighted_loss", "explicit sum divided by counts")
def _(x, x_hat, importance):
    weighted = torch.as_tensor(importance) * (x_hat - x).pow(2)
    return weighted.sum(dim=(0, 2)) / (x.shape[0] * x.shape[2])


# --------------------------------------------------------------------------- train_toy_models

def _train(model, feature_probability, importance=1.0, steps=5_000, batch_size=1024, lr=1e-3,
           lr_schedule=ref.cosine_decay_lr, seed=0, progress=True, sampler=None, target=None, *,
           use_importance=True, use_schedule=True, seeded=True, instances=None, zero_grad=True,
           use_sampler=True, use_target=True):
    generator = torch.Generator().manual_seed(seed) if seeded else None
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        if use_schedule:
            for group in optimiser.param_groups:
                group["lr"] = lr * lr_schedule(step, steps)
        if sampler is not None and use_sampler:
            x = sampler(batch_size, generator)
        else:
            x = ref.generate_sparse_features(batch_size, model.n_instances, model.n_features,
                                             feature_probability, generator)
        wanted = target(x) if target is not None and use_target else x
        losses = ref.importance_weighted_loss(wanted, model(x), importance if use_importance else 1.0)
        loss = losses[instances].sum() if instances is not None else losses.sum()
        if zero_grad:
            optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


@mutant("train_toy_models", "importance not passed to the loss")
def _(model, feature_probability, importance=1.0, **kwargs):
    return _train(model, feature_probability, importance, use_importance=False, **kwargs)


@mutant("train_toy_models", "lr_schedule ignored")
def _(model, feature_probability, importance=1.0, **kwargs):
    return _train(model, feature_probability, importance, use_schedule=False, **kwargs)


@mutant("train_toy_models", "seed ignored (global RNG)")
def _(model, feature_probability, importance=1.0, **kwargs):
    return _train(model, feature_probability, importance, seeded=False, **kwargs)


@mutant("train_toy_models", "only the first instance's loss is optimised")
def _(model, feature_probability, importance=1.0, **kwargs):
    return _train(model, feature_probability, importance, instances=0, **kwargs)


@mutant("train_toy_models", "gradients never zeroed")
def _(model, feature_probability, importance=1.0, **kwargs):
    return _train(model, feature_probability, importance, zero_grad=False, **kwargs)


@mutant("train_toy_models", "sampler ignored")
def _(model, feature_probability, importance=1.0, **kwargs):
    return _train(model, feature_probability, importance, use_sampler=False, **kwargs)


@mutant("train_toy_models", "target ignored (always reconstructs x)")
def _(model, feature_probability, importance=1.0, **kwargs):
    return _train(model, feature_probability, importance, use_target=False, **kwargs)


@mutant("train_toy_models", "no training: the most important features written in as unit directions")
def _(model, feature_probability, importance=1.0, **kwargs):
    weights = torch.as_tensor(importance, dtype=torch.float32).expand(model.n_instances, model.n_features)
    kept = weights.argsort(dim=-1, descending=True)[:, :model.d_hidden]
    W = torch.zeros(model.n_instances, model.d_hidden, model.n_features)
    for instance, features in enumerate(kept):
        W[instance, torch.arange(len(features)), features] = 1.0
    with torch.no_grad():
        model.W.copy_(W)
        model.b_final.zero_()
    return model


@alternative("train_toy_models", "LambdaLR scheduler, mean over instances")
def _(model, feature_probability, importance=1.0, steps=5_000, batch_size=1024, lr=1e-3,
      lr_schedule=ref.cosine_decay_lr, seed=0, progress=True, sampler=None, target=None):
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: lr_schedule(step, steps))
    draw = sampler or (lambda size, g: ref.generate_sparse_features(size, model.n_instances, model.n_features,
                                                                   feature_probability, g))
    for _ in range(steps):
        x = draw(batch_size, generator)
        wanted = x if target is None else target(x)
        # Adam is invariant to scaling the loss, so a mean over instances trains the same way
        ref.importance_weighted_loss(wanted, model(x), importance).mean().backward()
        optimiser.step()
        optimiser.zero_grad()
        scheduler.step()
    return model


# --------------------------------------------------------------------------- dimensionality

@mutant("dimensions_per_feature", "inverted: ‖W‖_F² / d_hidden")
def _(W):
    return W.pow(2).sum(dim=(1, 2)) / W.shape[1]


@mutant("dimensions_per_feature", "n_features instead of d_hidden")
def _(W):
    return W.shape[2] / W.pow(2).sum(dim=(1, 2))


@mutant("dimensions_per_feature", "Frobenius norm not squared")
def _(W):
    return W.shape[1] / W.norm(dim=(1, 2))


@mutant("dimensions_per_feature", "one norm over all instances")
def _(W):
    return W.shape[1] / W.pow(2).sum() * torch.ones(W.shape[0])


@alternative("dimensions_per_feature", "torch.linalg.matrix_norm")
def _(W):
    return W.shape[-2] / torch.linalg.matrix_norm(W) ** 2


@mutant("feature_dimensionality", "inverted")
def _(W, eps=1e-8):
    D = ref.feature_dimensionality(W, eps)
    return torch.where(D > 0, 1 / D.clamp(min=eps), 0.0)


@mutant("feature_dimensionality", "Ŵ_i not normalised (W_i · W_j)")
def _(W, eps=1e-8):
    overlaps = torch.einsum("ihf,ihg->ifg", W, W)
    return W.norm(dim=1) ** 2 / overlaps.pow(2).sum(-1).clamp(min=eps)


@mutant("feature_dimensionality", "the sum leaves out j = i")
def _(W, eps=1e-8):
    unit = W / W.norm(dim=1, keepdim=True).clamp(min=eps)
    overlaps = torch.einsum("ihf,ihg->ifg", unit, W).pow(2)
    others = overlaps.sum(-1) - torch.diagonal(overlaps, dim1=-2, dim2=-1)
    return W.norm(dim=1) ** 2 / others.clamp(min=eps)


@mutant("feature_dimensionality", "overlaps not squared")
def _(W, eps=1e-8):
    unit = W / W.norm(dim=1, keepdim=True).clamp(min=eps)
    overlaps = torch.einsum("ihf,ihg->ifg", unit, W)
    return W.norm(dim=1) ** 2 / overlaps.abs().sum(-1).clamp(min=eps)


@mutant("feature_dimensionality", "NaN for unused features")
def _(W, eps=1e-8):
    unit = W / W.norm(dim=1, keepdim=True)
    overlaps = torch.einsum("ihf,ihg->ifg", unit, W)
    return W.norm(dim=1) ** 2 / overlaps.pow(2).sum(-1)


@alternative("feature_dimensionality", "a loop over instances with a Gram matrix")
def _(W, eps=1e-8):
    out = []
    for Wi in W:
        gram = Wi.T @ Wi
        norms_sq = gram.diagonal()
        projections_sq = gram.pow(2) / norms_sq.clamp(min=eps ** 2)[:, None]
        out.append(torch.where(norms_sq > 0, norms_sq / projections_sq.sum(-1).clamp(min=eps), 0.0))
    return torch.stack(out)


# --------------------------------------------------------------------------- neuron_selectivity

@mutant("neuron_selectivity", "|W| instead of its positive part")
def _(W, eps=1e-8):
    squared = W.pow(2)
    return squared.amax(dim=-1) / squared.sum(dim=-1).clamp(min=eps)


@mutant("neuron_selectivity", "weights not squared")
def _(W, eps=1e-8):
    positive = W.clamp(min=0)
    return positive.amax(dim=-1) / positive.sum(dim=-1).clamp(min=eps)


@mutant("neuron_selectivity", "NaN for a neuron no feature can make fire")
def _(W, eps=1e-8):
    positive = W.clamp(min=0).pow(2)
    return positive.amax(dim=-1) / positive.sum(dim=-1)


@mutant("neuron_selectivity", "a feature's share of the neurons (max and sum over neurons)")
def _(W, eps=1e-8):
    positive = W.clamp(min=0).pow(2)
    return (positive.amax(dim=-2) / positive.sum(dim=-2).clamp(min=eps))[:, :W.shape[1]]


@alternative("neuron_selectivity", "torch.where on the sign, top-1 by sorting")
def _(W, eps=1e-8):
    positive = torch.where(W > 0, W * W, torch.zeros_like(W))
    top = positive.sort(dim=-1, descending=True).values[..., 0]
    total = positive.sum(dim=-1)
    return torch.where(total > eps, top / total.clamp(min=eps), torch.zeros_like(total))


# --------------------------------------------------------------------------- AbsoluteValueModel

class _Absolute(nn.Module):
    """An absolute-value model with switches for each mistake."""

    hidden_relu, output_relu, bias_inside = True, True, True

    def __init__(self, n_features, d_hidden, n_instances=1, generator=None):
        super().__init__()
        self.n_features, self.d_hidden, self.n_instances = n_features, d_hidden, n_instances
        std = math.sqrt(2 / (d_hidden + n_features))
        self.W_in = nn.Parameter(std * torch.randn(n_instances, d_hidden, n_features, generator=generator))
        self.W_out = nn.Parameter(std * torch.randn(n_instances, n_features, d_hidden, generator=generator))
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def forward(self, x):
        h = torch.einsum("ihf,bif->bih", self.W_in, x)
        h = torch.relu(h) if self.hidden_relu else h
        out = torch.einsum("ifh,bih->bif", self.W_out, h)
        if not self.bias_inside:
            return torch.relu(out) + self.b_final
        out = out + self.b_final
        return torch.relu(out) if self.output_relu else out


@mutant("AbsoluteValueModel", "no ReLU on the neurons")
class _(_Absolute):
    hidden_relu = False


@mutant("AbsoluteValueModel", "no ReLU on the output")
class _(_Absolute):
    output_relu = False


@mutant("AbsoluteValueModel", "bias added after the output ReLU")
class _(_Absolute):
    bias_inside = False


@mutant("AbsoluteValueModel", "tied weights: W_inᵀ on the way out, no W_out")
class _(_Absolute):
    def __init__(self, n_features, d_hidden, n_instances=1, generator=None):
        super().__init__(n_features, d_hidden, n_instances, generator)
        del self.W_out

    def forward(self, x):
        h = torch.relu(torch.einsum("ihf,bif->bih", self.W_in, x))
        return torch.relu(torch.einsum("ihf,bih->bif", self.W_in, h) + self.b_final)


@mutant("AbsoluteValueModel", "W_out stored as [n_instances, d_hidden, n_features]")
class _(_Absolute):
    def __init__(self, n_features, d_hidden, n_instances=1, generator=None):
        super().__init__(n_features, d_hidden, n_instances, generator)
        self.W_out = nn.Parameter(self.W_out.detach().transpose(1, 2).clone())

    def forward(self, x):
        h = torch.relu(torch.einsum("ihf,bif->bih", self.W_in, x))
        return torch.relu(torch.einsum("ihf,bih->bif", self.W_out, h) + self.b_final)


@mutant("AbsoluteValueModel", "initialised with std 1")
class _(_Absolute):
    def __init__(self, n_features, d_hidden, n_instances=1, generator=None):
        super().__init__(n_features, d_hidden, n_instances, generator)
        self.W_in = nn.Parameter(torch.randn(n_instances, d_hidden, n_features, generator=generator))
        self.W_out = nn.Parameter(torch.randn(n_instances, n_features, d_hidden, generator=generator))


@alternative("AbsoluteValueModel", "batched matrix products and clamp")
class _(nn.Module):
    def __init__(self, n_features, d_hidden, n_instances=1, generator=None):
        super().__init__()
        self.n_features, self.d_hidden, self.n_instances = n_features, d_hidden, n_instances
        std = math.sqrt(2 / (d_hidden + n_features))
        self.W_in = nn.Parameter(torch.randn(n_instances, d_hidden, n_features, generator=generator) * std)
        self.W_out = nn.Parameter(torch.randn(n_instances, n_features, d_hidden, generator=generator) * std)
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def forward(self, x):
        h = (self.W_in @ x.permute(1, 2, 0)).clamp(min=0)  # [inst, hidden, batch]
        return ((self.W_out @ h).permute(2, 0, 1) + self.b_final).clamp(min=0)


# --------------------------------------------------------------------------- single_feature_slopes

def _slopes(W_in, W_out, first, second, transpose=False):
    out = torch.stack([torch.einsum("ifh,ihj->ifj", W_out, first(W_in)),
                       torch.einsum("ifh,ihj->ifj", W_out, second(W_in))], dim=1)
    return out.transpose(-1, -2) if transpose else out


@mutant("single_feature_slopes", "the two sides swapped (index 0 for negative x)")
def _(W_in, W_out):
    return _slopes(W_in, W_out, lambda W: (-W).clamp(min=0), lambda W: W.clamp(min=0))


@mutant("single_feature_slopes", "no ReLU: W_out W_in and its negative")
def _(W_in, W_out):
    return _slopes(W_in, W_out, lambda W: W, lambda W: -W)


@mutant("single_feature_slopes", "|W_in| on both sides")
def _(W_in, W_out):
    return _slopes(W_in, W_out, torch.abs, torch.abs)


@mutant("single_feature_slopes", "input and output indices swapped ([σ, j, i])")
def _(W_in, W_out):
    return _slopes(W_in, W_out, lambda W: W.clamp(min=0), lambda W: (-W).clamp(min=0), transpose=True)


@alternative("single_feature_slopes", "a loop over the two signs with batched matrix products")
def _(W_in, W_out):
    return torch.stack([W_out @ torch.relu(sign * W_in) for sign in (1.0, -1.0)], dim=1)


# --------------------------------------------------------------------------- neuron_contributions

@mutant("neuron_contributions", "the two sides swapped")
def _(W_in, W_out):
    return ref.neuron_contributions(-W_in, W_out)


@mutant("neuron_contributions", "summed over the neurons (the slopes themselves)")
def _(W_in, W_out):
    return ref.neuron_contributions(W_in, W_out).sum(dim=2)


@mutant("neuron_contributions", "no ReLU: W_out[j, k]·σ·W_in[k, j]")
def _(W_in, W_out):
    both = torch.stack([W_in, -W_in], dim=1)
    return both * W_out.transpose(-1, -2)[:, None]


@alternative("neuron_contributions", "einsum over explicit signs")
def _(W_in, W_out):
    signs = torch.tensor([1.0, -1.0])
    return torch.einsum("s,ijk->isjk", torch.ones(2), W_out.transpose(-1, -2)) * \
        torch.relu(torch.einsum("s,ijk->isjk", signs, W_in))


# --------------------------------------------------------------------------- interference

@mutant("max_abs_cosine", "diagonal included (always 1)")
def _(V, eps=1e-8):
    unit = V / V.norm(dim=-1, keepdim=True).clamp(min=eps)
    return (unit @ unit.transpose(-1, -2)).abs().amax(dim=(-1, -2))


@mutant("max_abs_cosine", "signed cosine (antipodal pairs missed)")
def _(V, eps=1e-8):
    unit = V / V.norm(dim=-1, keepdim=True).clamp(min=eps)
    cos = (unit @ unit.transpose(-1, -2)) - 2 * torch.eye(V.shape[-2])
    return cos.amax(dim=(-1, -2)).clamp(min=0)


@mutant("max_abs_cosine", "dot products, not cosines")
def _(V, eps=1e-8):
    dots = (V @ V.transpose(-1, -2)).abs() * (1 - torch.eye(V.shape[-2]))
    return dots.amax(dim=(-1, -2))


@alternative("max_abs_cosine", "pairwise cosine via F.cosine_similarity and a mask")
def _(V, eps=1e-8):
    cos = torch.nn.functional.cosine_similarity(V[..., :, None, :], V[..., None, :, :], dim=-1, eps=eps)
    n = V.shape[-2]
    mask = ~torch.eye(n, dtype=torch.bool)
    if n < 2:
        return torch.zeros(V.shape[:-2])
    return cos.abs()[..., mask].amax(dim=-1)


@mutant("jl_interference_bound", "no square root")
def _(n, d):
    return 2 * math.log(n * (n - 1)) / d if n > 1 else 0.0


@mutant("jl_interference_bound", "ln n instead of ln n(n-1)")
def _(n, d):
    return math.sqrt(2 * math.log(n) / d) if n > 1 else 0.0


@mutant("jl_interference_bound", "n and d swapped")
def _(n, d):
    return math.sqrt(2 * math.log(d * (d - 1)) / n) if d > 1 else 0.0


@alternative("jl_interference_bound", "solving n(n-1)·exp(-d ε²/2) = 1 by bisection")
def _(n, d):
    if n < 2:
        return 0.0
    low, high = 0.0, 100.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if n * (n - 1) * math.exp(-d * mid ** 2 / 2) > 1 else (low, mid)
    return (low + high) / 2


# --------------------------------------------------------------------------- phases

def _phase(W, feature=-1, represented=0.5, interference=0.1, *, squared_norm=False, self_term=False,
           raw=False, fixed_feature=False):
    f = -1 if fixed_feature else feature
    column = W[:, :, f]
    norm = column.norm(dim=-1)
    direction = column if raw else column / norm[:, None].clamp(min=1e-8)
    overlaps = torch.einsum("ih,ihj->ij", direction, W).pow(2)
    shared = overlaps.sum(-1) if self_term else overlaps.sum(-1) - overlaps[:, f]
    strength = norm ** 2 if squared_norm else norm
    return torch.where(strength < represented, 0, torch.where(shared >= interference, 2, 1))


@mutant("classify_phase", "the feature's own term counted as interference")
def _(W, feature=-1, represented=0.5, interference=0.1):
    return _phase(W, feature, represented, interference, self_term=True)


@mutant("classify_phase", "squared norm compared with represented")
def _(W, feature=-1, represented=0.5, interference=0.1):
    return _phase(W, feature, represented, interference, squared_norm=True)


@mutant("classify_phase", "W_f not normalised")
def _(W, feature=-1, represented=0.5, interference=0.1):
    return _phase(W, feature, represented, interference, raw=True)


@mutant("classify_phase", "always the last feature")
def _(W, feature=-1, represented=0.5, interference=0.1):
    return _phase(W, feature, represented, interference, fixed_feature=True)


@mutant("classify_phase", "the thresholds ignored (their default values used)")
def _(W, feature=-1, represented=0.5, interference=0.1):
    return _phase(W, feature)


@mutant("classify_phase", "a negative feature index not wrapped (W[:, :, f:f + 1] is empty for f = -1)")
def _(W, feature=-1, represented=0.5, interference=0.1):
    own = W[:, :, feature:feature + 1]
    norm = own.norm(dim=1)[:, 0]
    overlaps = torch.einsum("ihx,ihj->ij", own / norm[:, None, None].clamp(min=1e-8), W).pow(2)
    shared = overlaps.sum(-1) - norm ** 2
    return torch.where(norm < represented, 0, torch.where(shared >= interference, 2, 1))


@alternative("classify_phase", "interference from cosines times norms of the others")
def _(W, feature=-1, represented=0.5, interference=0.1):
    vectors = W.transpose(1, 2)  # [inst, feats, hidden]
    own = vectors[:, feature]
    others = torch.cat([vectors[:, :feature % W.shape[-1]], vectors[:, feature % W.shape[-1] + 1:]], dim=1)
    cos = torch.nn.functional.cosine_similarity(own[:, None], others, dim=-1)
    shared = (cos * others.norm(dim=-1)).pow(2).sum(-1)
    phase = torch.full((W.shape[0],), 1)
    phase[shared >= interference] = 2
    phase[own.norm(dim=-1) < represented] = 0
    return phase


# --------------------------------------------------------------------------- correlated features

@mutant("generate_correlated_features", "independent features (no correlation)")
def _(batch_size, n_instances, n_pairs, feature_probability, generator=None):
    return ref.generate_sparse_features(batch_size, n_instances, 2 * n_pairs, feature_probability, generator)


@mutant("generate_correlated_features", "both features of a pair get the same value")
def _(batch_size, n_instances, n_pairs, feature_probability, generator=None):
    pairs = ref.generate_sparse_features(batch_size, n_instances, n_pairs, feature_probability, generator)
    return pairs.repeat_interleave(2, dim=-1)


@mutant("generate_correlated_features", "one firing decision per row, shared by all pairs")
def _(batch_size, n_instances, n_pairs, feature_probability, generator=None):
    fires = (torch.rand(batch_size, n_instances, 1, generator=generator) < feature_probability)
    fires = fires.expand(-1, -1, 2 * n_pairs)
    return torch.where(fires, torch.rand(fires.shape, generator=generator), 0.0)


@mutant("generate_anticorrelated_features", "one coin per row, shared by all pairs")
def _(batch_size, n_instances, n_pairs, feature_probability, generator=None):
    active = torch.rand(batch_size, n_instances, n_pairs, generator=generator) < 2 * feature_probability
    first = torch.rand(batch_size, n_instances, 1, generator=generator) < 0.5
    fires = torch.stack([active & first, active & ~first], dim=-1).flatten(-2)
    return torch.where(fires, torch.rand(fires.shape, generator=generator), 0.0)


@mutant("generate_anticorrelated_features", "pair active with probability p, not 2p")
def _(batch_size, n_instances, n_pairs, feature_probability, generator=None):
    return ref.generate_anticorrelated_features(batch_size, n_instances, n_pairs, feature_probability / 2,
                                                generator)


@mutant("generate_anticorrelated_features", "independent features (no anticorrelation)")
def _(batch_size, n_instances, n_pairs, feature_probability, generator=None):
    return ref.generate_sparse_features(batch_size, n_instances, 2 * n_pairs, feature_probability, generator)


@alternative("generate_anticorrelated_features", "one categorical draw per pair")
def _(batch_size, n_instances, n_pairs, feature_probability, generator=None):
    p = feature_probability
    which = torch.multinomial(torch.tensor([1 - 2 * p, p, p]), batch_size * n_instances * n_pairs,
                              replacement=True, generator=generator).view(batch_size, n_instances, n_pairs)
    fires = torch.stack([which == 1, which == 2], dim=-1).flatten(-2)
    return fires * torch.rand(fires.shape, generator=generator)
