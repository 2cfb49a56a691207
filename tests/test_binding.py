"""Hidden checks for chapter 5, binding.

Each case builds small inputs from its seed, calls the implementation under test, and
returns plain data; see ``utils.checks``. Inputs are chosen so that each plausible mistake
changes the answer: d_r ≠ d_f and non-symmetric square matrices (transposed bind or unbind),
several objects (sum vs mean), vectors of very different norms (cosine vs dot product), ties
(swapped-caption scoring), padding (mean pooling), offsets far from zero (a probe without an
intercept).
"""

import torch

from utils.checks import Suite, gradients
from utils.student_side import stacked_forward_under_vmap, vmapped

suite = Suite("binding")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scenes(g: torch.Generator, n_scenes: int, n_objects: int, n_colours: int = 8, n_shapes: int = 5):
    colours = torch.rand(n_scenes, n_colours, generator=g).argsort(-1)[:, :n_objects]
    shapes = torch.rand(n_scenes, n_shapes, generator=g).argsort(-1)[:, :n_objects]
    return torch.stack([colours, shapes], dim=-1)


def _raises_value_error(call) -> str:
    try:
        call()
    except ValueError as exc:
        return "ValueError" if str(exc).strip() else "ValueError without a message"
    except Exception as exc:  # noqa: BLE001 - the wrong kind of error is a result
        return type(exc).__name__
    return "no error"


# --------------------------------------------------------------------------- bag_of_features


@suite.case("bag_of_features", "sum of colour and shape vectors over objects",
            "add C[colour] + S[shape] for every object and sum over objects (not the mean); "
            "colour indices index C, shape indices index S")
def _(impl, seed):
    g = _gen(seed)
    C, S = torch.randn(8, 6, generator=g), torch.randn(5, 6, generator=g)
    return impl.bag_of_features(_scenes(g, 4, 3), C, S)


@suite.case("bag_of_features", "one object, and a batch of two-object scenes",
            "scenes are [scenes, objects, 2] with column 0 the colour and column 1 the shape")
def _(impl, seed):
    g = _gen(seed + 1)
    C, S = torch.randn(8, 3, generator=g) * 4, torch.randn(5, 3, generator=g)
    return impl.bag_of_features(_scenes(g, 3, 1), C, S), impl.bag_of_features(_scenes(g, 6, 2), C, S)


# --------------------------------------------------------------------------- tensor products


@suite.case("tensor_product_bind", "Σ r_i f_iᵀ with d_r ≠ d_f",
            "T[j, k] = Σ_i roles[i, j] · fillers[i, k]: shape [d_r, d_f], summed (not averaged) "
            "over the pairs")
def _(impl, seed):
    g = _gen(seed)
    return impl.tensor_product_bind(torch.randn(3, 4, generator=g), torch.randn(3, 6, generator=g))


@suite.case("tensor_product_bind", "square case (a transposed T has the right shape)",
            "T = Σ r_i f_iᵀ puts roles along the rows: einsum('n r, n f -> r f'), not f_i r_iᵀ")
def _(impl, seed):
    g = _gen(seed + 1)
    return impl.tensor_product_bind(torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g))


@suite.case("tensor_product_bind", "a single pair is the outer product",
            "with one pair, T is r fᵀ (torch.outer(r, f))")
def _(impl, seed):
    g = _gen(seed + 2)
    return impl.tensor_product_bind(torch.randn(1, 3, generator=g), torch.randn(1, 2, generator=g))


@suite.case("tensor_product_bind", "works under torch.vmap (a batch of scenes at once)",
            "use plain tensor operations: accumulating into a tensor made beforehand (T += ...) or "
            "calling .item() fails under torch.vmap, which the capacity experiment uses")
def _(impl, seed):
    g = _gen(seed + 3)
    return vmapped(impl.tensor_product_bind, torch.randn(5, 3, 4, generator=g), torch.randn(5, 3, 2, generator=g))


@suite.case("tensor_product_unbind", "roleᵀ T with a square, non-symmetric T",
            "unbinding is roleᵀ T (role @ T), a combination of T's rows; T @ role combines columns")
def _(impl, seed):
    g = _gen(seed)
    return impl.tensor_product_unbind(torch.randn(5, 5, generator=g), torch.randn(5, generator=g))


@suite.case("tensor_product_unbind", "rectangular T [d_r, d_f] gives a filler of size d_f",
            "the result has one entry per filler dimension: role [d_r] @ T [d_r, d_f] -> [d_f]")
def _(impl, seed):
    g = _gen(seed + 1)
    return impl.tensor_product_unbind(torch.randn(4, 7, generator=g), torch.randn(4, generator=g) * 3)


@suite.case("tensor_product_unbind", "orthonormal roles recover each filler exactly",
            "roleᵀ T with T = Σ r_i f_iᵀ and orthonormal r_i is exactly f_i; don't normalise the result")
def _(impl, seed):
    g = _gen(seed + 2)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    roles, fillers = Q[:3], torch.randn(3, 4, generator=g) * 2
    T = roles.T @ fillers
    return torch.stack([impl.tensor_product_unbind(T, r) for r in roles])


@suite.case("tensor_product_unbind", "a role of the wrong size raises ValueError",
            "check role.shape[0] == T.shape[0] first and raise ValueError with a message; "
            "T @ role silently 'works' when the role has size d_f")
def _(impl, seed):
    g = _gen(seed + 3)
    T = torch.randn(4, 6, generator=g)
    return _raises_value_error(lambda: impl.tensor_product_unbind(T, torch.randn(6, generator=g)))


@suite.case("tensor_product_unbind", "works under torch.vmap (a batch of tensors and roles)",
            "use plain tensor operations (role @ T): float(), .item() or torch.tensor([...]) fail "
            "under torch.vmap, which the capacity experiment uses")
def _(impl, seed):
    g = _gen(seed + 4)
    return vmapped(impl.tensor_product_unbind, torch.randn(6, 4, 3, generator=g), torch.randn(6, 4, generator=g))


# --------------------------------------------------------------------------- matrix_bind


@suite.case("matrix_bind", "random slot maps, fewer objects than slots",
            "object k uses slot map k: x = Σ_k (C[c_k] + S[s_k]) @ M_k, with M_k of shape [d, D]; "
            "both colour and shape go through the map")
def _(impl, seed):
    g = _gen(seed)
    C, S = torch.randn(8, 4, generator=g), torch.randn(5, 4, generator=g)
    maps = torch.randn(4, 4, 6, generator=g)
    return impl.matrix_bind(_scenes(g, 5, 3), C, S, maps)


@suite.case("matrix_bind", "square maps (a transposed map has the right shape)",
            "the object vector is a row vector multiplied on the left: (c + s) @ M_k, not M_k @ (c + s)")
def _(impl, seed):
    g = _gen(seed + 1)
    C, S = torch.randn(8, 5, generator=g), torch.randn(5, 5, generator=g)
    maps = torch.randn(2, 5, 5, generator=g)
    return impl.matrix_bind(_scenes(g, 4, 2), C, S, maps)


@suite.case("matrix_bind", "position maps concatenate the objects",
            "with block maps, slot k's object lands in dimensions [k·d, (k+1)·d)")
def _(impl, seed):
    g = _gen(seed + 2)
    C, S = torch.randn(8, 3, generator=g), torch.randn(5, 3, generator=g)
    maps = torch.eye(9).reshape(3, 3, 9)
    return impl.matrix_bind(_scenes(g, 4, 3), C, S, maps)


# --------------------------------------------------------------------------- MatrixBindingSAE


def _binding_sae(impl, seed, d_in=5, n_atoms=4):
    """A student's MatrixBindingSAE with parameters drawn from ``seed`` (set by load_state_dict,
    a method call with plain data)."""
    g = _gen(seed)
    sae = impl.MatrixBindingSAE(d_in, n_atoms)
    sae.load_state_dict({
        "W_enc": torch.randn(d_in, 2 * n_atoms, generator=g),
        "b_enc": torch.randn(2 * n_atoms, generator=g) * 0.3,
        "atoms": torch.randn(n_atoms, d_in, generator=g) * torch.tensor([[0.5], [2.0], [1.0], [3.0]])[:n_atoms],
        "R": torch.randn(d_in, d_in, generator=g),
        "b_dec": torch.randn(d_in, generator=g),
    })
    return sae, g


@suite.case("MatrixBindingSAE", "dictionary = rows of [D; D·R], unit norm",
            "stack the atoms D on top of D @ R (not R @ D or D @ R.T), then normalise each row")
def _(impl, seed):
    sae, _ = _binding_sae(impl, seed)
    return sae.dictionary().detach()


@suite.case("MatrixBindingSAE", "forward returns (x_hat, z)",
            "z = ReLU((x - b_dec) @ W_enc + b_enc); x_hat = z @ dictionary() + b_dec")
def _(impl, seed):
    sae, g = _binding_sae(impl, seed + 1)
    x_hat, z = sae(torch.randn(7, 5, generator=g) * 2)
    return x_hat.detach(), z.detach()


@suite.case("MatrixBindingSAE", "gradients reach R",
            "build the dictionary from self.atoms and self.R inside the method (no detach, no copy "
            "made in __init__), so training can learn R")
def _(impl, seed):
    sae, g = _binding_sae(impl, seed + 2)
    return gradients(sae, torch.randn(6, 5, generator=g), wrt=("R", "atoms"), powers=(2, 1))  # Σ x_hat² + Σ z


@suite.case("MatrixBindingSAE", "several SAEs at once under torch.vmap",
            "build the dictionary with plain tensor operations (torch.cat, @, F.normalize): writing "
            "rows into a tensor made beforehand, or .item(), fails under torch.vmap, which "
            "train_saes uses")
def _(impl, seed):
    saes = [_binding_sae(impl, seed + 3 + i)[0] for i in range(3)]
    return stacked_forward_under_vmap(saes, torch.randn(7, 5, generator=_gen(seed + 6)) * 2)


# --------------------------------------------------------------------------- mean_pool


@suite.case("mean_pool", "mean over real tokens, padding ignored",
            "multiply by the mask, sum over the sequence, and divide by the number of real tokens "
            "(mask.sum), not by the padded length")
def _(impl, seed):
    g = _gen(seed)
    hidden = torch.randn(3, 5, 4, generator=g)
    hidden[:, 3:] += 10  # padding positions hold large values
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    return impl.mean_pool(hidden, mask)


# --------------------------------------------------------------------------- swap_test_accuracy


def _as_float(x):
    return float(x)


@suite.case("swap_test_accuracy", "cosine, not dot product",
            "compare cosines: the vectors have very different norms")
def _(impl, seed):
    g = _gen(seed)
    anchor = torch.randn(40, 6, generator=g)
    positive = torch.randn(40, 6, generator=g) * torch.rand(40, 1, generator=g) * 5
    negative = torch.randn(40, 6, generator=g) * torch.rand(40, 1, generator=g) * 5
    return _as_float(impl.swap_test_accuracy(anchor, positive, negative))


@suite.case("swap_test_accuracy", "a tie counts one half",
            "when cos(anchor, positive) equals cos(anchor, negative) exactly (a bag of words), the "
            "pair counts 0.5, so an encoder blind to the swap scores exactly chance")
def _(impl, seed):
    g = _gen(seed + 1)
    anchor = torch.randn(10, 4, generator=g)
    positive = torch.randn(10, 4, generator=g)
    negative = positive.clone()
    negative[:3] = -positive[:3]  # three decided pairs; the other seven are exact ties
    return _as_float(impl.swap_test_accuracy(anchor, positive, negative))


# --------------------------------------------------------------------------- ridge_probe


def _probe_data(g, n, d, n_classes, offset):
    means = torch.randn(n_classes, d, generator=g) * 1.5
    y = torch.randint(n_classes, (n,), generator=g)
    return means[y] + torch.randn(n, d, generator=g) + offset, y


@suite.case("ridge_probe", "predictions with an intercept (data far from the origin)",
            "centre X and the one-hot Y by their training means before solving, and add the means "
            "back when predicting: (X_test - mean_X) @ W + mean_Y")
def _(impl, seed):
    g = _gen(seed)
    offset = torch.randn(6, generator=g) * 20
    X, y = _probe_data(g, 60, 6, 4, offset)
    X_test, _ = _probe_data(g, 80, 6, 4, offset)
    return impl.ridge_probe(X, y, X_test, n_classes=4, l2=1.0)


@suite.case("ridge_probe", "the l2 penalty is used as given",
            "W = (XᵀX + l2·I)⁻¹ XᵀY on centred data; a large l2 shrinks W toward 0, so predictions "
            "drift toward the most frequent class")
def _(impl, seed):
    g = _gen(seed + 1)
    X, y = _probe_data(g, 50, 5, 3, 0.0)
    y[:25] = 0  # an uneven class balance, so the intercept alone prefers class 0
    X_test, _ = _probe_data(g, 80, 5, 3, 0.0)
    return [impl.ridge_probe(X, y, X_test, n_classes=3, l2=l2) for l2 in (0.0, 300.0, 3000.0)]


@suite.case("ridge_probe", "a class absent from training is still a column",
            "one-hot with n_classes columns (F.one_hot(y, n_classes)), so predictions index classes")
def _(impl, seed):
    g = _gen(seed + 2)
    X, y = _probe_data(g, 40, 4, 3, 1.0)
    X_test, _ = _probe_data(g, 30, 4, 3, 1.0)
    y = y + 1  # labels 1..3 of 5 classes
    return impl.ridge_probe(X, y, X_test, n_classes=5, l2=1.0)


# --------------------------------------------------------------------------- contrastive_loss


def _embeddings(g, n=6, d=8):
    scale = torch.rand(n, 1, generator=g) * 3 + 0.2
    return torch.randn(n, d, generator=g) * scale


@suite.case("contrastive_loss", "symmetric InfoNCE without hard negatives",
            "normalise both sides, logits = cos / temperature, and average the image->text and "
            "text->image cross-entropies (targets 0..batch-1)",
            rtol=1e-4, atol=1e-5)
def _(impl, seed):
    g = _gen(seed)
    image, text = _embeddings(g), _embeddings(g)
    return torch.stack([torch.as_tensor(impl.contrastive_loss(image, text, temperature=t)).reshape(())
                        for t in (0.1, 0.5)])


@suite.case("contrastive_loss", "hard negatives join the image->text side only",
            "each image chooses among the batch's captions and all the hard negatives "
            "([batch, 2·batch] logits); the text->image side is unchanged")
def _(impl, seed):
    g = _gen(seed + 1)
    image, text, hard = _embeddings(g), _embeddings(g), _embeddings(g)
    return torch.as_tensor(impl.contrastive_loss(image, text, 0.2, hard)).reshape(())


@suite.case("contrastive_loss", "gradients flow to both towers",
            "compute the loss with differentiable tensor operations (no .item(), no detach)")
def _(impl, seed):
    g = _gen(seed + 2)
    image, text = _embeddings(g), _embeddings(g)
    return gradients(impl.contrastive_loss, image, text, 0.3, wrt=(0, 1), powers=1)


test_hidden_check = suite.pytest_function()
