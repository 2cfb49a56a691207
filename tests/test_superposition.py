"""Hidden checks for chapter 3, toy models of superposition.

Each case builds small inputs from its seed, calls the implementation under test, and
returns plain data; see ``utils.checks``. Samplers and training loops are random, so their
cases return raw samples or trained weights and judges check the statistics (firing
rates, uniform values, what was learned) in the grader's process. Inputs are chosen so
that each plausible mistake changes the answer: biases with both signs (ReLU, bias), a
square weight matrix that is not symmetric (Wᵀ W vs W Wᵀ), d_hidden ≠ n_features
(which dimension to count), vectors of very different norms (cosine vs dot product).
"""

import math

import torch

from utils.checks import Suite, gradients

suite = Suite("superposition")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(seed: int, n_instances: int, d_hidden: int, n_features: int) -> torch.Tensor:
    """Random weights whose instances and columns have different norms."""
    g = _generator(seed)
    W = torch.randn(n_instances, d_hidden, n_features, generator=g)
    return W * torch.exp(0.5 * torch.randn(n_instances, 1, n_features, generator=g))


def _batch(seed: int, batch: int, n_instances: int, n_features: int) -> torch.Tensor:
    g = _generator(seed)
    x = torch.rand(batch, n_instances, n_features, generator=g)
    return x * (torch.rand(batch, n_instances, n_features, generator=g) < 0.5)


# --------------------------------------------------------------------------- generate_sparse_features

_PROBABILITY = torch.tensor([[0.0, 0.1, 0.5], [0.9, 1.0, 0.25]])
_SAMPLES = 10_000


def _firing_rates(expected: torch.Tensor):
    def judge(x):
        if tuple(x.shape) != (_SAMPLES, *expected.shape):
            return f"the batch has shape {tuple(x.shape)}, expected [batch, n_instances, n_features] " \
                   f"= {[_SAMPLES, *expected.shape]}"
        rates = (x != 0).float().mean(0)
        worst = (rates - expected).abs().max().item()
        if worst > 0.02:
            return f"features fire at the wrong rate (off by up to {worst:.2f} from feature_probability)"
        return None
    return judge


def _uniform_values(x):
    values = x[x != 0]
    if values.numel() == 0:
        return "no feature ever fires"
    if values.min() < 0 or values.max() >= 1:
        return f"values outside [0, 1) (from {values.min().item():.3g} to {values.max().item():.3g})"
    for name, statistic, target in (("mean", values.mean(), 0.5), ("fraction below 1/4", (values < 0.25).float().mean(), 0.25),
                                    ("fraction below 3/4", (values < 0.75).float().mean(), 0.75)):
        if abs(statistic.item() - target) > 0.02:
            return f"the values that fire are not Uniform[0, 1) (their {name} is {statistic.item():.3f})"
    fired = (x != 0).sum(0)
    means = x.sum(0) / fired.clamp(min=1)
    if ((means - 0.5).abs()[fired > 500] > 0.05).any():
        return "for some features the values that fire are not Uniform[0, 1) (does the value depend on p?)"
    return None


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
        if abs(both - 0.09) > 0.02:
            return "features fire together more (or less) often than independent features would: " \
                   "draw one independent decision per batch row, instance and feature"
    return None


@suite.case("generate_sparse_features", "a plain float probability, independent features",
            "feature_probability may be a Python float; every entry of the batch fires on its own draw",
            judges=[_firing_rates(torch.full((2, 3), 0.3)), _independent], compare=False)
def _(impl, seed):
    return impl.generate_sparse_features(_SAMPLES, 2, 3, 0.3, _generator(seed))


def _same_then_different(result):
    first, again, other = result
    if not torch.equal(first, again):
        return "two generators with the same seed gave different batches: draw every random number " \
               "from `generator` (torch.rand(..., generator=generator))"
    if torch.equal(first, other):
        return "generators with different seeds gave the same batch"
    return None


@suite.case("generate_sparse_features", "all randomness comes from the generator",
            "pass generator=generator to every torch.rand call", judges=[_same_then_different], compare=False)
def _(impl, seed):
    return tuple(impl.generate_sparse_features(64, 2, 4, 0.5, _generator(s)) for s in (seed, seed, seed + 1))


# --------------------------------------------------------------------------- ToyModel


def _model(impl, seed, n_features, d_hidden, n_instances, relu=True):
    model = impl.ToyModel(n_features, d_hidden, n_instances, relu=relu)
    g = _generator(seed + 100)
    with torch.no_grad():
        model.W.copy_(_weights(seed, n_instances, d_hidden, n_features))
        model.b_final.copy_(0.5 * torch.randn(n_instances, n_features, generator=g))
    return model


@suite.case("ToyModel", "parameters W and b_final with the right shapes",
            "W is [n_instances, d_hidden, n_features] and b_final [n_instances, n_features], both "
            "nn.Parameter attributes")
def _(impl, seed):
    model = impl.ToyModel(7, 3, 4)
    return {"W": tuple(model.W.shape), "b_final": tuple(model.b_final.shape),
            "parameters": sorted(name for name, _ in model.named_parameters())}


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
    model = _model(impl, seed, 5, 2, 3)
    return gradients(model, _batch(seed, 16, 3, 5), wrt=("W", "b_final"))


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


# --------------------------------------------------------------------------- train_toy_models

# Training is judged against the reference trained from the same weights on the same seed:
# a trajectory of Adam steps cannot be written down without running it, so weights that only
# look trained (written from the importance, say) fail, while properties of the result (a
# model that reconstructs fresh data, the important feature kept) give the feedback.
_TRAINING = dict(steps=300, batch_size=256, lr=3e-2, progress=False)
_TRAJECTORY = dict(rtol=1e-3, atol=1e-4)


def _untrained(impl, seed, n_features, d_hidden, n_instances):
    """A student's model with small random weights and zero biases set from the seed: training
    then starts where the reference's starts."""
    model = impl.ToyModel(n_features, d_hidden, n_instances)
    with torch.no_grad():
        model.W.copy_(0.5 * torch.randn(n_instances, d_hidden, n_features, generator=_generator(seed + 200)))
        model.b_final.zero_()
    return model


def _reconstruction_error(model, seed):
    """The plain mean squared error of a trained model on a dense batch drawn here."""
    x = torch.rand(512, model.W.shape[0], model.W.shape[-1], generator=_generator(seed + 3))
    with torch.no_grad():
        return ((model(x) - x) ** 2).mean(dim=(0, 2))


def _learned_identity(result):
    if (result["error"] > 0.01).any():
        return "after training, some instances still reconstruct 2 dense features in 2 dimensions " \
               f"badly (mean squared error up to {result['error'].max().item():.3f}): does every instance train?"
    return None


@suite.case("train_toy_models", "2 dense features in 2 dimensions are learned, in every instance",
            "each step: a fresh batch from generate_sparse_features, the loss summed over instances, "
            "zero_grad, backward, optimiser step", judges=[_learned_identity], **_TRAJECTORY)
def _(impl, seed):
    trained = impl.train_toy_models(_untrained(impl, seed, 2, 2, 3), 1.0, 1.0, seed=seed, **_TRAINING)
    return {"W": trained.W.detach(), "b_final": trained.b_final.detach(),
            "error": _reconstruction_error(trained, seed)}


def _important_feature_wins(result):
    norms = result.norm(dim=1)  # [inst, feats]: instances alternate which feature matters
    for instance, (first, second) in enumerate(norms.tolist()):
        kept, dropped = (first, second) if instance % 2 == 0 else (second, first)
        if kept < 0.8 or dropped > 0.3:
            return "with one hidden dimension and dense features, the more important feature should " \
                   "get the dimension: pass importance to the loss"
    return None


@suite.case("train_toy_models", "importance decides which feature gets the only dimension",
            "weight the loss with importance (importance_weighted_loss(x, model(x), importance))",
            judges=[_important_feature_wins], **_TRAJECTORY)
def _(impl, seed):
    importance = torch.tensor([[1.0, 0.1], [0.1, 1.0]]).repeat(2, 1)
    trained = impl.train_toy_models(_untrained(impl, seed, 2, 1, 4), 1.0, importance, seed=seed, **_TRAINING)
    return trained.W.detach()


@suite.case("train_toy_models", "the learning rate follows lr_schedule",
            "set every parameter group's lr to lr * lr_schedule(step, steps) before each step "
            "(a schedule that returns 0 must leave the model unchanged)", **_TRAJECTORY)
def _(impl, seed):
    short = dict(steps=20, batch_size=32, lr=1e-2, seed=seed, progress=False)
    model = _untrained(impl, seed, 3, 2, 2)
    before = model.W.detach().clone()
    frozen = impl.train_toy_models(model, 0.5, 1.0, lr_schedule=lambda step, steps: 0.0, **short)
    halving = impl.train_toy_models(_untrained(impl, seed, 3, 2, 2), 0.5, 1.0,
                                    lr_schedule=lambda step, steps: 0.5 ** (step // 5), **short)
    return (frozen.W.detach() - before).abs().max(), halving.W.detach()


def _seeded(result):
    first, again, other = result
    if not torch.equal(first, again):
        return "the same seed gave different trained weights: make a torch.Generator from seed and " \
               "draw every batch from it"
    if torch.equal(first, other):
        return "different seeds gave the same trained weights: the seed is not used"
    return None


@suite.case("train_toy_models", "the seed decides the batches",
            "torch.Generator(device).manual_seed(seed), passed to generate_sparse_features",
            judges=[_seeded], **_TRAJECTORY)
def _(impl, seed):
    weights = []
    for s in (seed, seed, seed + 1):
        trained = impl.train_toy_models(_untrained(impl, seed, 3, 2, 2), 0.5, 1.0, steps=10, batch_size=32, lr=1e-2,
                                        seed=s, progress=False)
        weights.append(trained.W.detach().clone())
    return tuple(weights)


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


# --------------------------------------------------------------------------- phases


def _phase_weights() -> torch.Tensor:
    """Instances of 3 features in 2 dims, the last one (or the first) treated differently."""
    W = torch.zeros(7, 2, 3)
    W[:, 0, 0] = 1.0
    W[1, 1, 2] = 1.0                                          # own dimension
    W[2, 0, 2] = -1.0                                         # antipodal to feature 0
    W[3, 1, 2] = 0.3                                          # too weak to count
    W[4, 1, 2] = 0.6                                          # weak but represented, alone
    W[5, :, 2] = torch.tensor([0.2, 0.7])                     # mostly alone, a little overlap
    W[6, :, 2] = torch.tensor([0.25, 2.0])                    # long, a little overlap
    W[2, 1, 1] = 1.0
    return W


@suite.case("classify_phase", "the last feature: ignored / dedicated / superposed",
            "0 if ‖W_f‖ < represented; else 2 if Σ_{j≠f} (Ŵ_f · W_j)² ≥ interference (leave out j = f, "
            "whose term is ‖W_f‖²), else 1")
def _(impl, seed):
    return impl.classify_phase(_phase_weights())


@suite.case("classify_phase", "another feature and other thresholds",
            "use the feature index you are given, and the thresholds represented and interference")
def _(impl, seed):
    W = _phase_weights()
    return torch.stack([impl.classify_phase(W, feature=0), impl.classify_phase(W, represented=0.65),
                        impl.classify_phase(W, interference=0.03)])


# --------------------------------------------------------------------------- correlated features

_PAIRS_SAMPLES = 8_000


def _pairs_judge(together: bool, p: float):
    def judge(x):
        if tuple(x.shape) != (_PAIRS_SAMPLES, 2, 6):
            return f"the batch has shape {tuple(x.shape)}, expected [batch, n_instances, 2 * n_pairs]"
        fires = x != 0
        rates = fires.float().mean(0)
        if (rates - p).abs().max() > 0.02:
            return "each feature should fire with probability feature_probability"
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


@suite.case("generate_correlated_features", "pairs fire together, each with probability p",
            "draw one firing decision per pair and give it to both features (repeat_interleave), then "
            "independent Uniform[0, 1) values", judges=[_pairs_judge(True, 0.3)], compare=False)
def _(impl, seed):
    return impl.generate_correlated_features(_PAIRS_SAMPLES, 2, 3, 0.3, _generator(seed))


@suite.case("generate_anticorrelated_features", "pairs never fire together, each with probability p",
            "a pair is active with probability 2p, and then exactly one of its features fires",
            judges=[_pairs_judge(False, 0.2)], compare=False)
def _(impl, seed):
    return impl.generate_anticorrelated_features(_PAIRS_SAMPLES, 2, 3, 0.2, _generator(seed))


test_hidden_check = suite.pytest_function()
