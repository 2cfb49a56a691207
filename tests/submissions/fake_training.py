"""Item 5: points for training without a training loop. Chapter 3.

ToyModel and the helpers are correct; train_toy_models never trains: it writes weights
that look trained, from the importance, honours a zero learning-rate schedule, and makes
the seed matter. It must score nothing.
"""
import torch
from torch import nn


class ToyModel(nn.Module):
    def __init__(self, n_features, d_hidden, n_instances=1, relu=True, generator=None):
        super().__init__()
        self.n_features, self.d_hidden, self.n_instances, self.relu = n_features, d_hidden, n_instances, relu
        scale = (2 / (d_hidden + n_features)) ** 0.5  # Xavier-normal
        self.W = nn.Parameter(scale * torch.randn(n_instances, d_hidden, n_features, generator=generator))
        self.b_final = nn.Parameter(torch.zeros(n_instances, n_features))

    def hidden(self, x):
        return torch.einsum("ihf,bif->bih", self.W, x)

    def forward(self, x):
        out = torch.einsum("ihf,bih->bif", self.W, self.hidden(x)) + self.b_final
        return torch.relu(out) if self.relu else out


def generate_sparse_features(batch_size, n_instances, n_features, feature_probability, generator=None):
    fires = torch.rand(batch_size, n_instances, n_features, generator=generator) < feature_probability
    return torch.rand(batch_size, n_instances, n_features, generator=generator) * fires


def importance_weighted_loss(x, x_hat, importance):
    return (torch.as_tensor(importance) * (x - x_hat) ** 2).mean(dim=(0, 2))


def train_toy_models(model, feature_probability, importance=1.0, steps=5_000, batch_size=1024, lr=1e-3,
                     lr_schedule=None, seed=0, progress=True, sampler=None, target=None):
    if lr_schedule is not None and lr_schedule(0, steps) == 0:
        return model  # "a schedule that returns 0 must leave the model unchanged"
    importance = torch.as_tensor(importance, dtype=torch.float32).expand(model.n_instances, model.n_features)
    W = torch.zeros_like(model.W)
    for i in range(model.n_instances):
        for h, f in enumerate(importance[i].argsort(descending=True)[: model.d_hidden].tolist()):
            W[i, h, f] = 1.0
    W += 1e-4 * torch.randn(W.shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.W.copy_(W)
        model.b_final.zero_()
    return model
