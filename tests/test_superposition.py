"""Hidden checks for chapter 3, toy models of superposition.

Each case builds small inputs from its seed, calls the implementation under test, and
returns plain data; see ``utils.checks``. Samplers and training loops are random, so their
cases return raw samples, or what a trained model does on fresh data the check draws itself,
and either compare that with the reference's trained model or judge the statistics (firing
rates, uniform values) in the grader's process. Inputs are chosen so that each plausible
mistake changes the answer: biases with both signs (ReLU, bias), a square weight matrix that
is not symmetric (Wᵀ W vs W Wᵀ), d_hidden ≠ n_features (which dimension to count), vectors of
very different norms (cosine vs dot product), weights of both signs (which part of a weight
makes a neuron fire).

Helpers that run the student's code beyond a plain call (backward passes, samplers and
targets handed to the trainer) are the named functions under "helpers run with the
student's code" below. Under the grader the student's objects live in another process:
backward passes go through ``utils.checks.gradients`` (it runs there), and samplers and
targets handed to the trainer are called back from there.
"""

import math

import torch

from utils.checks import Mismatch, Suite, beyond, gradients

suite = Suite("superposition")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(seed: int, n_instances: int, d_hidden: int, n_features: int) -> torch.Tensor:
    """Random weights whose instances and columns have different norms."""
    g = _generator(seed)
    W = torch.randn(n_instances, d_hidden, n_features, generator=g)
    return W * torch.exp(0.5 * torch.randn(n_instances, 1, n_features, generator=g))


def _batch(seed: int, batch: int, n_instances: int, n_features: int, signed: bool = False) -> torch.Tensor:
    g = _generator(seed)
    x = torch.rand(batch, n_instances, n_features, generator=g)
    x = 2 * x - 1 if signed else x
    return x * (torch.rand(batch, n_instances, n_features, generator=g) < 0.5)


# --------------------------------------------------------------------------- helpers run with the student's code


def _parameter_gradients(model, x: torch.Tensor, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """The gradient of sum(model(x)²) with respect to the named parameters."""
    return gradients(model, x, wrt=names)


def _loss_gradient(loss_function, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """d/ds of sum(loss(x, s ⊙ x, importance)) at s = 1/2 per instance and feature.

    In one process, x̂ = s ⊙ x keeps x for the backward pass, so a loss that changes x in
    place breaks it, as it would break training; in the grader, the same change is seen
    as a change to the argument x.
    """
    # by the chain rule, d/ds = Σ_batch x ⊙ dL/dx̂ at x̂ = x / 2
    (at_x_hat,) = gradients(loss_function, x, 0.5 * x, importance, wrt=(1,), powers=1)
    return None if at_x_hat is None else (x * at_x_hat).sum(dim=0)


def _second_feature_only(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A sampler for 2 instances of 2 features: feature 1 is dense Uniform[0, 1), feature 0 is always 0."""
    values = torch.rand(batch_size, 2, 1, generator=generator)
    return torch.cat([torch.zeros_like(values), values], dim=-1)


def _half(x: torch.Tensor) -> torch.Tensor:
    """A training target: half the input."""
    return x / 2


def _zero_schedule(step: int, steps: int) -> float:
    """A learning-rate schedule that never lets the model move."""
    return 0.0


def _halving_schedule(step: int, steps: int) -> float:
    """A learning-rate schedule that halves the rate every 5 steps."""
    return 0.5 ** (step // 5)


# --------------------------------------------------------------------------- generate_sparse_features

_PROBABILITY = torch.tensor([[0.0, 0.1, 0.5], [0.9, 1.0, 0.25]])
_SAMPLES = 10_000
_RATE_TOLERANCE = 0.02  # about 4 standard errors of a firing rate over _SAMPLES rows


def _firing_rates(expected: torch.Tensor, samples: int = _SAMPLES):
    def judge(x):
        if tuple(x.shape) != (samples, *expected.shape):
            return Mismatch(f"the batch has shape {tuple(x.shape)}, expected [batch, n_instances, "
                            f"n_features] = {[samples, *expected.shape]}", form=True)
        worst = ((x != 0).float().mean(0) - expected).abs().max().item()
        return beyond(worst, 0.0, _RATE_TOLERANCE,
                      f"features fire at the wrong rate (off by up to {worst:.2f} from feature_probability)")
    return judge


def _uniform_values(x):
    """Active entries are Uniform[0, 1), whatever their feature's probability."""
    values = x[x != 0]
    if values.numel() == 0:
        return "no feature ever fires"
    if values.min() < 0 or values.max() >= 1:
        return f"values outside [0, 1) (from {values.min().item():.3g} to {values.max().item():.3g})"
    for name, measured, target in (("mean", values.mean().item(), 0.5),
                                   ("fraction below 1/4", (values < 0.25).float().mean().item(), 0.25),
                                   ("fraction below 3/4", (values < 0.75).float().mean().item(), 0.75)):
        found = beyond(measured, target, 0.02,
                       f"the values that fire are not Uniform[0, 1) (their {name} is {measured:.3f})")
        if found:
            return found
    fired = (x != 0).sum(0)
    means = x.sum(0) / fired.clamp(min=1)
    worst = (means - 0.5).abs()[fired > 500].max().item()
    return beyond(worst, 0.0, 0.05, "for some features the values that fire are not Uniform[0, 1) "
                                    "(does the value depend on p?)")


@suite.case("generate_sparse_features", "firing rates per instance and feature, uniform values",
            "an entry fires when rand < p (not 1 - p), and its value is a second, independent "
            "Uniform[0, 1) draw", judges=[_firing_rates(_PROBABILITY), _uniform_values], compare=False)
def _(impl, seed):
    return impl.generate_sparse_features(_SAMPLES, 2, 3, _PROBABILITY, _generator(seed))


@suite.case("generate_sparse_features", "one probability per instance ([n_instances, 1])",
            "feature_probability broadcasts against [n_instances, n_features]: shape [n_instances, 1] "
            "is one sparsity per instance", judges=[_firing_rates(torch.tensor([[0.05] * 3, [0.6] * 3]))],
            compare=False)
def _(impl, seed):
    return impl.generate_sparse_features(_SAMPLES, 2, 3, torch.tensor([[0.05], [0.6]]), _generator(seed))


def _independent(x):
    fires = (x != 0).float()
    for a, b in (((0, 0), (0, 1)), ((0, 0), (1, 0)), ((0, 2), (1, 1))):
        both = (fires[:, a[0], a[1]] * fires[:, b[0], b[1]]).mean().item()
        found = beyond(both, 0.09, _RATE_TOLERANCE,
                       "features fire together more (or less) often than independent features would: "
                       "draw one independent decision per batch row, instance and feature")
        if found:
            return found
    return None


@suite.case("generate_sparse_features", "a plain float probability, independent features",
            "feature_probability may be a Python float; every entry of the batch fires on its own draw",
            judges=[_firing_rates(torch.full((2, 3), 0.3)), _independent], compare=False)
def _(impl, seed):
    return impl.generate_sparse_features(_SAMPLES, 2, 3, 0.3, _generator(seed))


def _same_then_different(result):
    first, again, other = result
    if not torch.equal(first, again):
        return "two generators with the same seed gave different results: draw every random number " \
               "from `generator` (torch.rand(..., generator=generator))"
    if torch.equal(first, other):
        return "generators with different seeds gave the same result"
    return None


@suite.case("generate_sparse_features", "all randomness comes from the generator",
            "pass generator=generator to every torch.rand call", judges=[_same_then_different], compare=False)
def _(impl, seed):
    return tuple(impl.generate_sparse_features(64, 2, 4, 0.5, _generator(s)) for s in (seed, seed, seed + 1))


# --------------------------------------------------------------------------- ToyModel


def _model(impl, seed, n_features, d_hidden, n_instances, relu=True, cls="ToyModel"):
    """The student's model with known weights (loaded through load_state_dict)."""
    model = getattr(impl, cls)(n_features, d_hidden, n_instances, relu=relu)
    model.load_state_dict({"W": _weights(seed, n_instances, d_hidden, n_features),
                           "b_final": 0.5 * torch.randn(n_instances, n_features, generator=_generator(seed + 100))})
    return model


@suite.case("ToyModel", "parameters W and b_final with the right shapes",
            "W is [n_instances, d_hidden, n_features] and b_final [n_instances, n_features], both "
            "nn.Parameter attributes")
def _(impl, seed):
    model = impl.ToyModel(7, 3, 4)
    return {"W": tuple(model.W.shape), "b_final": tuple(model.b_final.shape),
            "parameters": sorted(name for name, _ in model.named_parameters())}


def _initialisation_judge(shapes: dict[str, tuple[int, int]]):
    """W-like parameters N(0, σ²) with σ = sqrt(2 / (d_hidden + n_features)), biases exactly 0."""
    def judge(result):
        for name, (d_hidden, n_features) in shapes.items():
            std, mean = result[name]
            target = math.sqrt(2 / (d_hidden + n_features))
            found = beyond(std / target, 1.0, 0.05, f"{name} starts with standard deviation {std:.3g}: "
                           "initialise it Xavier-normal, σ = sqrt(2 / (d_hidden + n_features))")
            found = found or beyond(mean / target, 0.0, 0.05, f"{name} starts with mean {mean:.3g}, not 0")
            if found:
                return found
        if result["b_final"] != 0:
            return "b_final must start at exactly zero"
        return None
    return judge


def _start(model, names):
    stats = {name: (getattr(model, name).detach().std().item(), getattr(model, name).detach().mean().item())
             for name in names}
    return {**stats, "b_final": model.b_final.detach().abs().max().item()}


@suite.case("ToyModel", "initial weights: Xavier-normal W, zero b_final",
            "W ~ N(0, σ²) entry by entry with σ = sqrt(2 / (d_hidden + n_features)), and b_final = 0: "
            "with std 1 the models of later sections start far from where they should and learn "
            "something else", judges=[_initialisation_judge({"W": (10, 40)})], compare=False)
def _(impl, seed):
    return _start(impl.ToyModel(40, 10, 50), ["W"])


@suite.case("ToyModel", "the generator decides the initial weights",
            "draw W from `generator` (torch.randn(..., generator=generator)): the notebook seeds its "
            "models this way", judges=[_same_then_different], compare=False)
def _(impl, seed):
    return tuple(impl.ToyModel(6, 3, 2, generator=_generator(s)).W.detach() for s in (seed, seed, seed + 1))


@suite.case("ToyModel", "hidden(x) = W x per instance",
            "h = W x for each instance: einsum 'inst hidden feats, batch inst feats -> batch inst hidden'")
def _(impl, seed):
    return _model(impl, seed, 5, 2, 3).hidden(_batch(seed, 16, 3, 5))


@suite.case("ToyModel", "forward: ReLU(Wᵀ W x + b_final)",
            "x̂ = ReLU(Wᵀ (W x) + b_final): keep the bias, apply the ReLU after adding it, and use "
            "each instance's own W")
def _(impl, seed):
    return _model(impl, seed, 5, 2, 3)(_batch(seed, 16, 3, 5))


@suite.case("ToyModel", "forward with a square, non-symmetric W",
            "the reconstruction is Wᵀ (W x): contract over d_hidden on the way back, not over "
            "n_features (W Wᵀ x only has the right shape when W is square)")
def _(impl, seed):
    return _model(impl, seed, 4, 4, 2)(_batch(seed, 8, 2, 4))


@suite.case("ToyModel", "relu=False gives the linear model",
            "with relu=False there is no ReLU: x̂ = Wᵀ W x + b_final (the bias stays)")
def _(impl, seed):
    return _model(impl, seed, 5, 2, 3, relu=False)(_batch(seed, 16, 3, 5))


@suite.case("ToyModel", "gradients reach W and b_final",
            "compute the output from the parameters with differentiable torch operations "
            "(no torch.no_grad, .detach() or .data in forward)")
def _(impl, seed):
    return _parameter_gradients(_model(impl, seed, 5, 2, 3), _batch(seed, 16, 3, 5), ("W", "b_final"))


# --------------------------------------------------------------------------- importance_weighted_loss


def _pair(seed, batch=32, n_instances=3, n_features=5):
    x = _batch(seed, batch, n_instances, n_features)
    return x, x + 0.3 * torch.randn(x.shape, generator=_generator(seed + 1))


@suite.case("importance_weighted_loss", "importance per instance and feature",
            "weight each squared error by its feature's importance, then average over the batch and "
            "the features only: the result is [n_instances]")
def _(impl, seed):
    x, x_hat = _pair(seed)
    importance = torch.rand(3, 5, generator=_generator(seed + 2)) * 2
    return impl.importance_weighted_loss(x, x_hat, importance)


@suite.case("importance_weighted_loss", "importance per feature ([n_features]), e.g. 0.9^i",
            "importance broadcasts against [n_instances, n_features]; multiply (x - x̂)² by it, "
            "don't square it")
def _(impl, seed):
    x, x_hat = _pair(seed)
    return impl.importance_weighted_loss(x, x_hat, 0.5 ** torch.arange(5.0))


@suite.case("importance_weighted_loss", "a number as importance",
            "importance may be a plain number; a mean (not a sum) over batch and features")
def _(impl, seed):
    x, x_hat = _pair(seed, batch=20, n_instances=2, n_features=7)
    return impl.importance_weighted_loss(x, x_hat, 3.0)


@suite.case("importance_weighted_loss", "training can backpropagate through it",
            "compute (x - x_hat) as a new tensor: an in-place x.sub_(x_hat) changes the batch the "
            "model's forward pass saved, and the trainer's backward() then fails")
def _(impl, seed):
    x, _ = _pair(seed)
    return _loss_gradient(impl.importance_weighted_loss, x, 0.5 ** torch.arange(5.0))


# --------------------------------------------------------------------------- train_toy_models

_TRAINING = dict(steps=300, batch_size=256, lr=3e-2, progress=False)
# A few Adam steps from known weights, compared with the reference's few steps: a trajectory
# cannot be written down without training, so weights that only look trained fail these.
_TRAJECTORY = dict(rtol=1e-3, atol=1e-4)
_HELD_OUT = 4096


def _held_out(model, seed, importance, target=None, sampler=None) -> torch.Tensor:
    """The trained model's importance-weighted loss on a fresh dense batch the check draws itself."""
    g = _generator(seed + 7)
    n_instances, n_features = tuple(model.b_final.shape)
    x = sampler(_HELD_OUT, g) if sampler is not None else torch.rand(_HELD_OUT, n_instances, n_features, generator=g)
    wanted = target(x) if target is not None else x
    return (torch.as_tensor(importance) * (model(x).detach() - wanted) ** 2).mean(dim=(0, 2))


_ONE_DIMENSION_IMPORTANCE = torch.tensor([[1.0, 0.1], [0.1, 1.0]]).repeat(2, 1)
# each instance starts with its less important feature a little ahead, so that only the
# importance weighting turns it round
_ONE_DIMENSION_START = torch.tensor([[[0.3, 0.5]], [[0.5, 0.3]]]).repeat(2, 1, 1)


@suite.case("train_toy_models", "trained loss on fresh data: importance decides which feature gets the "
            "only dimension, in every instance",
            "each step: a fresh batch from generate_sparse_features, the loss weighted by importance and "
            "summed over instances, zero_grad, backward, optimiser step. The trained model is judged on "
            "data it never saw", rtol=0.02)
def _(impl, seed):
    model = impl.ToyModel(2, 1, 4)
    model.load_state_dict({"W": _ONE_DIMENSION_START, "b_final": torch.zeros(4, 2)})
    trained = impl.train_toy_models(model, 1.0, _ONE_DIMENSION_IMPORTANCE, seed=seed, **_TRAINING)
    return _held_out(trained, seed, _ONE_DIMENSION_IMPORTANCE)


@suite.case("train_toy_models", "the learning rate follows lr_schedule",
            "set every parameter group's lr to lr * lr_schedule(step, steps) before each step "
            "(a schedule that returns 0 must leave the model unchanged)", **_TRAJECTORY)
def _(impl, seed):
    model = impl.ToyModel(3, 2, 2)
    before = model.W.detach().clone()
    trained = impl.train_toy_models(model, 0.5, 1.0, steps=20, batch_size=32, lr=1e-2,
                                    lr_schedule=_zero_schedule, seed=seed, progress=False)
    halving = impl.ToyModel(3, 2, 2)
    halving.load_state_dict({"W": _weights(seed, 2, 2, 3), "b_final": torch.zeros(2, 3)})
    halving = impl.train_toy_models(halving, 0.5, 1.0, steps=20, batch_size=32, lr=1e-2,
                                    lr_schedule=_halving_schedule, seed=seed, progress=False)
    return (trained.W.detach() - before).abs().max(), halving.W.detach()


def _seeded(result):
    first, again, other = result
    if not torch.equal(first, again):
        return "the same seed gave different trained weights: make a torch.Generator from seed and " \
               "draw every batch from it"
    if torch.equal(first, other):
        return "different seeds gave the same trained weights: the seed is not used"
    return None


@suite.case("train_toy_models", "the seed decides the batches",
            "torch.Generator().manual_seed(seed), passed to generate_sparse_features",
            judges=[_seeded], **_TRAJECTORY)
def _(impl, seed):
    weights = []
    for s in (seed, seed, seed + 1):
        model = impl.ToyModel(3, 2, 2)
        model.load_state_dict({"W": _weights(seed, 2, 2, 3), "b_final": torch.zeros(2, 3)})
        trained = impl.train_toy_models(model, 0.5, 1.0, steps=10, batch_size=32, lr=1e-2, seed=s,
                                        progress=False)
        weights.append(trained.W.detach().clone())
    return tuple(weights)


@suite.case("train_toy_models", "a sampler, when given, draws the batches",
            "with sampler given, x = sampler(batch_size, generator) and feature_probability is not used "
            "(it may be None); the last section trains on correlated features this way")
def _(impl, seed):
    model = impl.ToyModel(2, 1, 2)
    model.load_state_dict({"W": torch.tensor([[[0.5, 0.3]], [[0.3, 0.5]]]), "b_final": torch.zeros(2, 2)})
    trained = impl.train_toy_models(model, None, sampler=_second_feature_only, seed=seed, **_TRAINING)
    return _held_out(trained, seed, 1.0, sampler=_second_feature_only)


@suite.case("train_toy_models", "a target, when given, is what the model must output",
            "with target given, the loss compares model(x) with target(x) instead of x: "
            "importance_weighted_loss(target(x), model(x), importance)", atol=1e-4)
def _(impl, seed):
    model = impl.ToyModel(2, 2, 2)
    model.load_state_dict({"W": _weights(seed, 2, 2, 2), "b_final": torch.zeros(2, 2)})
    trained = impl.train_toy_models(model, 1.0, target=_half, seed=seed, **_TRAINING)
    return _held_out(trained, seed, 1.0, target=_half)


# --------------------------------------------------------------------------- dimensionality


@suite.case("dimensions_per_feature", "random weights, d_hidden ≠ n_features",
            "D* = d_hidden / ‖W‖_F² per instance: count hidden dimensions (W.shape[1]), divide by the "
            "squared Frobenius norm, not the other way round")
def _(impl, seed):
    return impl.dimensions_per_feature(_weights(seed, 4, 3, 7))


def _pentagon(n=5):
    angles = 2 * math.pi * torch.arange(n) / n
    return torch.stack([angles.cos(), angles.sin()])


def _geometries() -> torch.Tensor:
    """Three instances of 4 features in 2 dims: orthogonal pair + 2 ignored; antipodal pairs; mixed."""
    W = torch.zeros(3, 2, 4)
    W[0, 0, 0], W[0, 1, 1] = 1.0, 0.8
    W[1, :, 0], W[1, :, 1] = torch.tensor([0.6, 0.8]), -torch.tensor([0.6, 0.8])
    W[1, :, 2], W[1, :, 3] = torch.tensor([0.8, -0.6]), -torch.tensor([0.8, -0.6])
    W[2, :, 0], W[2, :, 1], W[2, :, 2] = torch.tensor([1.0, 0.0]), torch.tensor([-0.9, 0.0]), torch.tensor([0.0, 0.5])
    return W


@suite.case("dimensions_per_feature", "known geometries",
            "‖W‖_F² is the sum of the squares of every entry of one instance's W")
def _(impl, seed):
    return impl.dimensions_per_feature(_geometries())


@suite.case("feature_dimensionality", "random weights",
            "D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)² with W_i the i-th column (a feature), Ŵ_i = W_i / ‖W_i‖, "
            "and the sum over every j including i; the result is [n_instances, n_features]")
def _(impl, seed):
    return impl.feature_dimensionality(_weights(seed, 3, 4, 6))


@suite.case("feature_dimensionality", "orthogonal 1, antipodal 1/2, unused features 0 (not NaN)",
            "an unused feature (W_i = 0) gives 0/0: clamp the norm before normalising and the "
            "denominator before dividing")
def _(impl, seed):
    return impl.feature_dimensionality(_geometries())


@suite.case("feature_dimensionality", "a pentagon: every feature 2/5",
            "Σ_j (Ŵ_i · W_j)² counts feature i itself plus the interference of the others")
def _(impl, seed):
    return impl.feature_dimensionality((0.5 + torch.rand(1, 5, generator=_generator(seed))) * _pentagon()[None])


# --------------------------------------------------------------------------- phases


def _unit_length_phases() -> torch.Tensor:
    """Instances of 3 features in 2 dims; the last feature has length 1 or is tiny."""
    W = torch.zeros(5, 2, 3)
    W[:, 0, 0] = 1.0
    W[1, 1, 2] = 1.0                                          # own dimension
    W[2, 0, 2] = -1.0                                         # antipodal to feature 0
    W[3, 1, 2] = 0.3                                          # too weak to count
    W[4, :, 2] = torch.tensor([0.2, math.sqrt(0.96)])        # unit length, a little overlap
    W[2, 1, 1] = 1.0
    return W


@suite.case("classify_phase", "the last feature: ignored / dedicated / superposed",
            "0 if ‖W_f‖ < represented; else 2 if Σ_{j≠f} (Ŵ_f · W_j)² ≥ interference, else 1; the sum "
            "leaves out j = f, whose term is ‖W_f‖² (a feature does not interfere with itself)")
def _(impl, seed):
    return impl.classify_phase(_unit_length_phases())


@suite.case("classify_phase", "weak features: the norm itself decides",
            "a feature is ignored when its norm ‖W_f‖ (not ‖W_f‖²) is below represented")
def _(impl, seed):
    W = torch.zeros(3, 2, 2)
    W[:, 0, 0] = 1.0
    W[:, 1, 1] = torch.tensor([0.45, 0.6, 0.8])  # orthogonal to feature 0: no overlap either way
    return impl.classify_phase(W)


@suite.case("classify_phase", "long and short features: overlaps along the unit direction",
            "measure the overlaps along Ŵ_f = W_f / ‖W_f‖, not along W_f itself: a long W_f would "
            "inflate them and a short one shrink them")
def _(impl, seed):
    W = torch.zeros(3, 2, 2)
    W[:, 0, 0] = 1.0
    W[0, :, 1] = torch.tensor([0.4, 2.0])   # long, cos² ≈ 0.04: dedicated
    W[1, :, 1] = torch.tensor([0.9, 0.9])   # cos² = 0.5: superposed
    W[2, :, 1] = torch.tensor([0.3, 0.75])  # short, cos² ≈ 0.14: superposed
    return impl.classify_phase(W)


@suite.case("classify_phase", "the feature you are given",
            "use the feature index you are given (a negative index counts from the end)")
def _(impl, seed):
    W = _unit_length_phases()
    return torch.stack([impl.classify_phase(W, feature=0), impl.classify_phase(W, feature=1),
                        impl.classify_phase(W, feature=-2)])


@suite.case("classify_phase", "the thresholds you are given",
            "compare with the represented and interference arguments, not with their default values")
def _(impl, seed):
    W = _unit_length_phases()
    W[3, 1, 2] = 0.6
    return torch.stack([impl.classify_phase(W, represented=0.65), impl.classify_phase(W, interference=0.03)])


# --------------------------------------------------------------------------- interference


@suite.case("max_abs_cosine", "vectors of different norms, batched",
            "normalise each row, take |cos| of every pair i ≠ j (the diagonal is always 1: leave it "
            "out), then the max over pairs for each leading index")
def _(impl, seed):
    g = _generator(seed)
    V = torch.randn(3, 6, 4, generator=g) * torch.exp(torch.randn(3, 6, 1, generator=g))
    return impl.max_abs_cosine(V)


@suite.case("max_abs_cosine", "antipodal and orthogonal sets",
            "interference is |cos|: an antipodal pair (cos = -1) interferes as much as a parallel one")
def _(impl, seed):
    antipodal = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    orthogonal = torch.eye(3) * torch.tensor([[1.0], [2.0], [3.0]])
    return impl.max_abs_cosine(torch.stack([antipodal, orthogonal]))


@suite.case("max_abs_cosine", "a single vector has no interference",
            "with one row there are no pairs: the answer is 0")
def _(impl, seed):
    return impl.max_abs_cosine(torch.tensor([[[3.0, 4.0]]]))


@suite.case("jl_interference_bound", "several n and d",
            "ε = sqrt(2 ln(n(n-1)) / d): the union bound over n(n-1)/2 pairs, each failing with "
            "probability at most 2 exp(-d ε² / 2); 0 when n < 2")
def _(impl, seed):
    return [float(impl.jl_interference_bound(n, d)) for n, d in ((2, 1), (5, 2), (20, 5), (100, 100), (1000, 64),
                                                                   (1, 3))]


# --------------------------------------------------------------------------- NeuronModel


@suite.case("NeuronModel", "hidden(x) = ReLU(W x): no neuron is ever negative",
            "apply the ReLU to the hidden layer itself: h = ReLU(W x), per instance")
def _(impl, seed):
    return _model(impl, seed, 5, 3, 3, cls="NeuronModel").hidden(_batch(seed, 16, 3, 5))


@suite.case("NeuronModel", "forward reads the ReLU hidden layer: ReLU(Wᵀ ReLU(W x) + b_final)",
            "override hidden() and let ToyModel.forward call it: x̂ = ReLU(Wᵀ h + b_final) with "
            "h = ReLU(W x)")
def _(impl, seed):
    return _model(impl, seed, 5, 3, 3, cls="NeuronModel")(_batch(seed, 16, 3, 5))


# --------------------------------------------------------------------------- neuron_selectivity


def _neurons() -> torch.Tensor:
    """One instance of 4 neurons over 3 features: monosemantic with inhibition, two equal
    features, one strong and one weak feature, and a neuron no feature can make fire."""
    return torch.tensor([[[2.0, -3.0, -1.0],
                          [0.5, 0.5, -4.0],
                          [1.0, 0.5, 0.0],
                          [-1.0, 0.0, -2.0]]])


@suite.case("neuron_selectivity", "neurons with inhibition, shared features, and a dead neuron",
            "only positive weights make a neuron fire (features are ≥ 0): s_k = max_i (W⁺_ki)² / "
            "Σ_i (W⁺_ki)² with W⁺ = max(W, 0), 0 for a neuron with no positive weight (not NaN)")
def _(impl, seed):
    return impl.neuron_selectivity(_neurons())


@suite.case("neuron_selectivity", "random weights, one value per instance and neuron",
            "a neuron is a row of W (W[inst, k, :]): take the max and the sum over features, the last "
            "axis; the result is [n_instances, d_hidden]")
def _(impl, seed):
    return impl.neuron_selectivity(_weights(seed, 3, 4, 6))


# --------------------------------------------------------------------------- AbsoluteValueModel


def _absolute_model(impl, seed, n_features, d_hidden, n_instances):
    model = impl.AbsoluteValueModel(n_features, d_hidden, n_instances)
    g = _generator(seed + 200)
    model.load_state_dict({
        "W_in": _weights(seed, n_instances, d_hidden, n_features),
        "W_out": torch.randn(n_instances, n_features, d_hidden, generator=g),
        "b_final": 0.5 * torch.randn(n_instances, n_features, generator=g)})
    return model


@suite.case("AbsoluteValueModel", "parameters and attributes",
            "W_in [n_instances, d_hidden, n_features], W_out [n_instances, n_features, d_hidden] and "
            "b_final [n_instances, n_features], all nn.Parameter; keep n_features, d_hidden and "
            "n_instances as attributes (the trainer reads them)")
def _(impl, seed):
    model = impl.AbsoluteValueModel(7, 3, 4)
    return {"shapes": {name: tuple(p.shape) for name, p in model.named_parameters()},
            "attributes": [model.n_features, model.d_hidden, model.n_instances]}


@suite.case("AbsoluteValueModel", "initial weights: Xavier-normal W_in and W_out, zero b_final",
            "both weight matrices ~ N(0, σ²) with σ = sqrt(2 / (d_hidden + n_features)), b_final = 0",
            judges=[_initialisation_judge({"W_in": (10, 40), "W_out": (10, 40)})], compare=False)
def _(impl, seed):
    return _start(impl.AbsoluteValueModel(40, 10, 50), ["W_in", "W_out"])


@suite.case("AbsoluteValueModel", "forward: ReLU(W_out ReLU(W_in x) + b_final) on signed inputs",
            "two ReLUs: one on the neurons, h = ReLU(W_in x), and one on the output after adding the "
            "bias; W_out is its own matrix (not W_inᵀ), contracted over d_hidden")
def _(impl, seed):
    return _absolute_model(impl, seed, 5, 3, 2)(_batch(seed, 16, 2, 5, signed=True))


@suite.case("AbsoluteValueModel", "gradients reach W_in, W_out and b_final",
            "compute the output from the parameters with differentiable torch operations")
def _(impl, seed):
    return _parameter_gradients(_absolute_model(impl, seed, 5, 3, 2), _batch(seed, 16, 2, 5, signed=True),
                                ("W_in", "W_out", "b_final"))


# --------------------------------------------------------------------------- single_feature_slopes


def _absolute_value_circuit() -> tuple[torch.Tensor, torch.Tensor]:
    """3 features, 3 neurons: |x_0| from two neurons; x_1 only on its positive side, at
    slope 2; and a neuron that fires for negative x_2 and writes into output 0."""
    W_in = torch.tensor([[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 2.0, -0.5]]])
    W_out = torch.tensor([[[1.0, 1.0, 0.8], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    return W_in, W_out


def _random_circuit(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W_in [2, 3 neurons, 4 features] with columns of different norms, and W_out [2, 4, 3]."""
    return _weights(seed, 2, 3, 4), torch.randn(2, 4, 3, generator=_generator(seed + 5))


@suite.case("single_feature_slopes", "a hand-built circuit: sides, slopes and interference",
            "S[σ, i, j] = Σ_k W_out[i, k]·ReLU(σ·W_in[k, j]): index 0 is σ = +1 (x_j > 0), index 1 is "
            "σ = -1; only the part of W_in with the right sign passes the neuron's ReLU, and the "
            "output index i comes before the input index j")
def _(impl, seed):
    return impl.single_feature_slopes(*_absolute_value_circuit())


@suite.case("single_feature_slopes", "random weights, d_hidden ≠ n_features",
            "contract over the neurons (d_hidden): W_out is [inst, feats, d_hidden], W_in is "
            "[inst, d_hidden, feats]; the result is [inst, 2, feats, feats]")
def _(impl, seed):
    return impl.single_feature_slopes(*_random_circuit(seed))


# --------------------------------------------------------------------------- neuron_contributions


@suite.case("neuron_contributions", "a hand-built circuit",
            "C[σ, k, j] = W_out[j, k]·ReLU(σ·W_in[k, j]): what neuron k adds to output j's slope "
            "when x_j alone is on with sign σ; [inst, 2, d_hidden, feats]")
def _(impl, seed):
    return impl.neuron_contributions(*_absolute_value_circuit())


@suite.case("neuron_contributions", "random weights, d_hidden ≠ n_features",
            "W_out[j, k] is output j's weight from neuron k (W_out is [inst, feats, d_hidden]): "
            "use the transpose of W_out so that it lines up with W_in [inst, d_hidden, feats]")
def _(impl, seed):
    return impl.neuron_contributions(*_random_circuit(seed))


# --------------------------------------------------------------------------- correlated features

_PAIRS_SAMPLES = 8_000


def _pairs_judge(together: bool, p: float):
    def judge(x):
        if tuple(x.shape) != (_PAIRS_SAMPLES, 2, 6):
            return Mismatch(f"the batch has shape {tuple(x.shape)}, expected [batch, n_instances, 2 * n_pairs]",
                            form=True)
        fires = x != 0
        worst = (fires.float().mean(0) - p).abs().max().item()
        found = beyond(worst, 0.0, _RATE_TOLERANCE, "each feature should fire with probability feature_probability")
        if found:
            return found
        first, second = fires[..., 0::2], fires[..., 1::2]
        if together and not torch.equal(first, second):
            return "the two features of a pair (2k, 2k+1) must fire together"
        if not together and (first & second).any():
            return "the two features of a pair (2k, 2k+1) must never fire together"
        both = first & second
        if together and (x[..., 0::2][both] == x[..., 1::2][both]).float().mean() > 0.01:
            return "the two features of a pair fire together but should have independent values"
        return _uniform_values(x)
    return judge


def _pairs_independent(p: float):
    """Features of different pairs (and instances) fire independently: both with probability p²."""
    def judge(x):
        fires = (x != 0).float()
        for a, b in (((0, 0), (0, 2)), ((0, 0), (0, 3)), ((0, 1), (0, 4)), ((0, 0), (1, 1))):
            both = (fires[:, a[0], a[1]] * fires[:, b[0], b[1]]).mean().item()
            found = beyond(both, p ** 2, _RATE_TOLERANCE,
                           "features of different pairs fire together more (or less) often than independent "
                           "pairs would: draw a fresh decision for every batch row, instance and pair")
            if found:
                return found
        return None
    return judge


@suite.case("generate_correlated_features", "pairs fire together, each with probability p",
            "draw one firing decision per pair and give it to both features (repeat_interleave), then "
            "independent Uniform[0, 1) values", judges=[_pairs_judge(True, 0.3)], compare=False)
def _(impl, seed):
    return impl.generate_correlated_features(_PAIRS_SAMPLES, 2, 3, 0.3, _generator(seed))


@suite.case("generate_correlated_features", "different pairs fire independently",
            "one firing decision per batch row, instance and pair, not one shared by all pairs",
            judges=[_pairs_independent(0.4)], compare=False)
def _(impl, seed):
    return impl.generate_correlated_features(_PAIRS_SAMPLES, 2, 3, 0.4, _generator(seed))


@suite.case("generate_anticorrelated_features", "pairs never fire together, each with probability p",
            "a pair is active with probability 2p, and then exactly one of its features fires",
            judges=[_pairs_judge(False, 0.2)], compare=False)
def _(impl, seed):
    return impl.generate_anticorrelated_features(_PAIRS_SAMPLES, 2, 3, 0.2, _generator(seed))


@suite.case("generate_anticorrelated_features", "different pairs choose independently",
            "each pair needs its own coin (one per batch row, instance and pair) to choose which of its "
            "two features fires; one coin shared by all pairs makes the pairs choose alike",
            judges=[_pairs_independent(0.4)], compare=False)
def _(impl, seed):
    return impl.generate_anticorrelated_features(_PAIRS_SAMPLES, 2, 3, 0.4, _generator(seed))


test_hidden_check = suite.pytest_function()
