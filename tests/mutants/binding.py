"""Deliberately wrong implementations of chapter 5's exercises (each must fail a check),
and correct alternatives written differently from the reference (each must pass)."""

import torch
import torch.nn.functional as F

from solutions import binding as ref
from tests.mutants import Registry

mutants = Registry()
mutant, alternative = mutants.mutant, mutants.alternative


# --------------------------------------------------------------------------- bag_of_features

@mutant("bag_of_features", "mean over objects instead of sum")
def _(scenes, colour_vecs, shape_vecs):
    return (colour_vecs[scenes[..., 0]] + shape_vecs[scenes[..., 1]]).mean(-2)


@mutant("bag_of_features", "colours only")
def _(scenes, colour_vecs, shape_vecs):
    return colour_vecs[scenes[..., 0]].sum(-2)


@mutant("bag_of_features", "colour and shape columns swapped")
def _(scenes, colour_vecs, shape_vecs):
    return (colour_vecs[scenes[..., 1]] + shape_vecs[scenes[..., 0]]).sum(-2)


@alternative("bag_of_features", "gather and sum")
def _(scenes, colour_vecs, shape_vecs):
    return colour_vecs[scenes[..., 0]].sum(-2) + shape_vecs[scenes[..., 1]].sum(-2)


# --------------------------------------------------------------------------- tensor products

@mutant("tensor_product_bind", "transposed: Σ f_i r_iᵀ")
def _(roles, fillers):
    return fillers.T @ roles


@mutant("tensor_product_bind", "mean instead of sum")
def _(roles, fillers):
    return roles.T @ fillers / roles.shape[0]


@mutant("tensor_product_bind", "only the last pair (overwrites instead of adding)")
def _(roles, fillers):
    return torch.outer(roles[-1], fillers[-1])


@mutant("tensor_product_bind", "accumulates in place into a zeros tensor (fails under vmap)")
def _(roles, fillers):
    if roles.shape[0] != fillers.shape[0]:
        raise ValueError("roles and fillers need the same number of rows")
    T = torch.zeros(roles.shape[1], fillers.shape[1])
    for r, f in zip(roles, fillers):
        T += torch.outer(r, f)
    return T


@alternative("tensor_product_bind", "a loop of outer products")
def _(roles, fillers):
    T = torch.zeros(roles.shape[1], fillers.shape[1])
    for r, f in zip(roles, fillers):
        T = T + torch.outer(r, f)
    return T


@mutant("tensor_product_unbind", "T · role instead of roleᵀ T")
def _(T, role):
    if role.shape[0] != T.shape[0]:
        raise ValueError("role has the wrong size")
    return T @ role


@mutant("tensor_product_unbind", "normalises the result")
def _(T, role):
    if role.shape[0] != T.shape[0]:
        raise ValueError("role has the wrong size")
    return F.normalize(role @ T, dim=0)


@mutant("tensor_product_unbind", "no size check (torch's own error)")
def _(T, role):
    return role @ T


@mutant("tensor_product_unbind", "divides by the role's squared norm")
def _(T, role):
    if role.shape[0] != T.shape[0]:
        raise ValueError("role has the wrong size")
    return role @ T / (role @ role)


@mutant("tensor_product_unbind", "one float per filler dimension (fails under vmap)")
def _(T, role):
    if role.shape[0] != T.shape[0]:
        raise ValueError("role has the wrong size")
    return torch.tensor([float(role @ T[:, j]) for j in range(T.shape[1])])


@alternative("tensor_product_unbind", "sum of role-weighted rows")
def _(T, role):
    if role.shape != (T.shape[0],):
        raise ValueError(f"role must have size {T.shape[0]}")
    return (role[:, None] * T).sum(0)


# --------------------------------------------------------------------------- matrix_bind

@mutant("matrix_bind", "maps applied as M_k @ v (transposed)")
def _(scenes, colour_vecs, shape_vecs, slot_maps):
    objects = colour_vecs[scenes[..., 0]] + shape_vecs[scenes[..., 1]]
    k = scenes.shape[-2]
    return torch.einsum("bkd,kDd->bD", objects, slot_maps[:k])


@mutant("matrix_bind", "only colours go through the map")
def _(scenes, colour_vecs, shape_vecs, slot_maps):
    k = scenes.shape[-2]
    bound = torch.einsum("bkd,kdD->bD", colour_vecs[scenes[..., 0]], slot_maps[:k])
    return bound + shape_vecs[scenes[..., 1]].sum(-2) @ slot_maps[0]


@mutant("matrix_bind", "every object goes through every map")
def _(scenes, colour_vecs, shape_vecs, slot_maps):
    objects = (colour_vecs[scenes[..., 0]] + shape_vecs[scenes[..., 1]]).sum(-2)
    return objects @ slot_maps.sum(0)


@mutant("matrix_bind", "slots in reverse order")
def _(scenes, colour_vecs, shape_vecs, slot_maps):
    k = scenes.shape[-2]
    objects = colour_vecs[scenes[..., 0]] + shape_vecs[scenes[..., 1]]
    return torch.einsum("bkd,kdD->bD", objects.flip(-2), slot_maps[:k])


@alternative("matrix_bind", "a loop over slots")
def _(scenes, colour_vecs, shape_vecs, slot_maps):
    x = 0
    for k in range(scenes.shape[1]):
        x = x + colour_vecs[scenes[:, k, 0]] @ slot_maps[k] + shape_vecs[scenes[:, k, 1]] @ slot_maps[k]
    return x


# --------------------------------------------------------------------------- MatrixBindingSAE

class _LeftR(ref.MatrixBindingSAE):
    def dictionary(self):
        return F.normalize(torch.cat([self.atoms, (self.R @ self.atoms.T).T]), dim=-1)


class _RTransposed(ref.MatrixBindingSAE):
    def dictionary(self):
        return F.normalize(torch.cat([self.atoms, self.atoms @ self.R.T]), dim=-1)


class _Unnormalised(ref.MatrixBindingSAE):
    def dictionary(self):
        return torch.cat([self.atoms, self.atoms @ self.R])


class _NoBdecSubtracted(ref.MatrixBindingSAE):
    def forward(self, x):
        z = F.relu(x @ self.W_enc + self.b_enc)
        return z @ self.dictionary() + self.b_dec, z


class _NoBdecAdded(ref.MatrixBindingSAE):
    def forward(self, x):
        z = F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        return z @ self.dictionary(), z


class _FrozenR(ref.MatrixBindingSAE):
    def dictionary(self):
        return F.normalize(torch.cat([self.atoms, self.atoms @ self.R.detach()]), dim=-1)


class _RowsWrittenIn(ref.MatrixBindingSAE):
    def dictionary(self):
        n = self.atoms.shape[0]
        rows = torch.empty(2 * n, self.atoms.shape[1])
        rows[:n] = self.atoms
        rows[n:] = self.atoms @ self.R
        return F.normalize(rows, dim=-1)


class _ExplicitNorms(ref.MatrixBindingSAE):
    def dictionary(self):
        rows = torch.cat([self.atoms, torch.einsum("ad,de->ae", self.atoms, self.R)])
        return rows / rows.norm(dim=1, keepdim=True)

    def forward(self, x):
        z = torch.clamp(torch.einsum("bd,dl->bl", x - self.b_dec, self.W_enc) + self.b_enc, min=0)
        return torch.einsum("bl,ld->bd", z, self.dictionary()) + self.b_dec, z


mutant("MatrixBindingSAE", "R applied on the left (R·D)")(_LeftR)
mutant("MatrixBindingSAE", "D·Rᵀ")(_RTransposed)
mutant("MatrixBindingSAE", "dictionary rows not normalised")(_Unnormalised)
mutant("MatrixBindingSAE", "b_dec not subtracted before encoding")(_NoBdecSubtracted)
mutant("MatrixBindingSAE", "b_dec not added back")(_NoBdecAdded)
mutant("MatrixBindingSAE", "R detached (never learned)")(_FrozenR)
mutant("MatrixBindingSAE", "rows written into a pre-made tensor (fails under vmap)")(_RowsWrittenIn)
alternative("MatrixBindingSAE", "einsum and explicit norms")(_ExplicitNorms)


# --------------------------------------------------------------------------- mean_pool

@mutant("mean_pool", "mean over every position, padding included")
def _(hidden, attention_mask):
    return hidden.mean(1)


@mutant("mean_pool", "masked sum divided by the padded length")
def _(hidden, attention_mask):
    return (hidden * attention_mask[..., None]).sum(1) / hidden.shape[1]


@alternative("mean_pool", "a loop over sentences")
def _(hidden, attention_mask):
    return torch.stack([h[m.bool()].mean(0) for h, m in zip(hidden, attention_mask)])


# --------------------------------------------------------------------------- swap_test_accuracy

def _cosines(anchor, positive, negative):
    return F.cosine_similarity(anchor, positive, dim=-1), F.cosine_similarity(anchor, negative, dim=-1)


@mutant("swap_test_accuracy", "ties count as losses")
def _(anchor, positive, negative):
    pos, neg = _cosines(anchor, positive, negative)
    return (pos > neg).float().mean().item()


@mutant("swap_test_accuracy", "ties count as wins")
def _(anchor, positive, negative):
    pos, neg = _cosines(anchor, positive, negative)
    return (pos >= neg).float().mean().item()


@mutant("swap_test_accuracy", "dot product instead of cosine")
def _(anchor, positive, negative):
    pos, neg = (anchor * positive).sum(-1), (anchor * negative).sum(-1)
    return ((pos > neg).float() + 0.5 * (pos == neg).float()).mean().item()


@alternative("swap_test_accuracy", "sign of the difference")
def _(anchor, positive, negative):
    a, p, n = (F.normalize(t, dim=-1) for t in (anchor, positive, negative))
    return float(((torch.sign((a * p).sum(-1) - (a * n).sum(-1)) + 1) / 2).mean())


# --------------------------------------------------------------------------- ridge_probe

def _ridge(X_train, y_train, X_test, n_classes, l2, centre=True, use_l2=True):
    Y = F.one_hot(y_train, n_classes).float()
    x_mean = X_train.mean(0) if centre else torch.zeros(X_train.shape[1])
    y_mean = Y.mean(0) if centre else torch.zeros(n_classes)
    Xc = X_train - x_mean
    penalty = l2 if use_l2 else 1.0
    W = torch.linalg.solve(Xc.T @ Xc + penalty * torch.eye(X_train.shape[1]), Xc.T @ (Y - y_mean))
    return ((X_test - x_mean) @ W + y_mean).argmax(-1)


@mutant("ridge_probe", "no intercept (data not centred)")
def _(X_train, y_train, X_test, n_classes, l2=1.0):
    return _ridge(X_train, y_train, X_test, n_classes, l2, centre=False)


@mutant("ridge_probe", "l2 ignored (fixed at 1)")
def _(X_train, y_train, X_test, n_classes, l2=1.0):
    return _ridge(X_train, y_train, X_test, n_classes, l2, use_l2=False)


@mutant("ridge_probe", "mean_Y not added back when predicting")
def _(X_train, y_train, X_test, n_classes, l2=1.0):
    Y = F.one_hot(y_train, n_classes).float()
    x_mean = X_train.mean(0)
    Xc = X_train - x_mean
    W = torch.linalg.solve(Xc.T @ Xc + l2 * torch.eye(X_train.shape[1]), Xc.T @ (Y - Y.mean(0)))
    return ((X_test - x_mean) @ W).argmax(-1)


@mutant("ridge_probe", "one-hot width taken from the labels seen")
def _(X_train, y_train, X_test, n_classes, l2=1.0):
    return _ridge(X_train, y_train - y_train.min(), X_test, int(y_train.max() - y_train.min()) + 1, l2)


@alternative("ridge_probe", "an appended bias column, unpenalised")
def _(X_train, y_train, X_test, n_classes, l2=1.0):
    Y = F.one_hot(y_train, n_classes).double()
    A = torch.cat([X_train.double(), torch.ones(len(X_train), 1, dtype=torch.float64)], 1)
    penalty = l2 * torch.eye(A.shape[1], dtype=torch.float64)
    penalty[-1, -1] = 0
    W = torch.linalg.solve(A.T @ A + penalty, A.T @ Y)
    B = torch.cat([X_test.double(), torch.ones(len(X_test), 1, dtype=torch.float64)], 1)
    return (B @ W).argmax(-1)


# --------------------------------------------------------------------------- contrastive_loss

def _clip(image_emb, text_emb, temperature, hard_negatives, normalise=True, both_sides=True,
          use_hard=True, hard_on_text_side=False, scale=None):
    if normalise:
        image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
        hard_negatives = None if hard_negatives is None else F.normalize(hard_negatives, dim=-1)
    scale = (1 / temperature) if scale is None else scale
    candidates = text_emb if hard_negatives is None or not use_hard else torch.cat([text_emb, hard_negatives])
    targets = torch.arange(len(image_emb))
    loss_i = F.cross_entropy(image_emb @ candidates.T * scale, targets)
    if not both_sides:
        return loss_i
    if hard_on_text_side and hard_negatives is not None:
        # wrongly also lets each caption choose among the hard negatives' "images"
        loss_t = F.cross_entropy(text_emb @ torch.cat([image_emb, hard_negatives]).T * scale, targets)
    else:
        loss_t = F.cross_entropy(text_emb @ image_emb.T * scale, targets)
    return (loss_i + loss_t) / 2


@mutant("contrastive_loss", "image->text side only")
def _(image_emb, text_emb, temperature=0.1, hard_negatives=None):
    return _clip(image_emb, text_emb, temperature, hard_negatives, both_sides=False)


@mutant("contrastive_loss", "embeddings not normalised")
def _(image_emb, text_emb, temperature=0.1, hard_negatives=None):
    return _clip(image_emb, text_emb, temperature, hard_negatives, normalise=False)


@mutant("contrastive_loss", "multiplies by the temperature")
def _(image_emb, text_emb, temperature=0.1, hard_negatives=None):
    return _clip(image_emb, text_emb, temperature, hard_negatives, scale=temperature)


@mutant("contrastive_loss", "hard negatives ignored")
def _(image_emb, text_emb, temperature=0.1, hard_negatives=None):
    return _clip(image_emb, text_emb, temperature, hard_negatives, use_hard=False)


@mutant("contrastive_loss", "hard negatives also on the text->image side")
def _(image_emb, text_emb, temperature=0.1, hard_negatives=None):
    return _clip(image_emb, text_emb, temperature, hard_negatives, hard_on_text_side=True)


@mutant("contrastive_loss", "loss returned as a Python float (no gradient)")
def _(image_emb, text_emb, temperature=0.1, hard_negatives=None):
    return torch.tensor(_clip(image_emb, text_emb, temperature, hard_negatives).item())


@alternative("contrastive_loss", "log-softmax written out, logit matrix transposed for text")
def _(image_emb, text_emb, temperature=0.1, hard_negatives=None):
    i = image_emb / image_emb.norm(dim=-1, keepdim=True)
    t = text_emb / text_emb.norm(dim=-1, keepdim=True)
    logits = i @ t.T / temperature
    if hard_negatives is not None:
        h = hard_negatives / hard_negatives.norm(dim=-1, keepdim=True)
        image_side = torch.cat([logits, i @ h.T / temperature], dim=1)
    else:
        image_side = logits
    n = len(i)
    loss_i = -(image_side.log_softmax(1)[torch.arange(n), torch.arange(n)]).mean()
    loss_t = -(logits.T.log_softmax(1).diagonal()).mean()
    return 0.5 * (loss_i + loss_t)
