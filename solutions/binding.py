"""Chapter 5, binding: reference solutions.

"Red cube, blue sphere": a bag of feature directions cannot say which colour goes with which
shape. This module builds scenes of (colour, shape) objects, the binding schemes that can
(slots, tensor products, the seed's matrix binding), a sparse autoencoder whose dictionary is
[D; D·R], and the swapped-caption test for real encoders (MiniLM, CLIP/SigLIP) and for a tiny
CLIP-style dual encoder trained here on rendered images.

Shapes: a batch of scenes is ``Int[Tensor, "scenes objects 2"]``, each object a pair
(colour index, shape index) into ``COLOURS`` and ``SHAPES``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, reduce
from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from solutions.saes import mean_max_cosine_similarity, sae_loss  # chapter 4
from utils.artifacts import device

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("cube", "sphere", "cone", "cylinder", "ring")
# RGB for rendering, in COLOURS order; the background is mid grey
RGB = ((0.9, 0.1, 0.1), (0.1, 0.75, 0.1), (0.15, 0.25, 0.95), (0.95, 0.9, 0.1),
       (0.6, 0.1, 0.75), (1.0, 0.55, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


# --------------------------------------------------------------------------- scenes


def scene_indices(objects: Sequence[tuple[str, str]]) -> Int[Tensor, "objects 2"]:
    """``[("red", "cube"), ("blue", "sphere")]`` -> ``[[0, 0], [2, 1]]``, with a clear error
    for a colour or shape outside ``COLOURS``/``SHAPES``."""
    rows = []
    for item in objects:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"each object must be a (colour, shape) pair such as ('red', 'cube'), got {item!r}")
        colour, shape = item
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; the colours are {', '.join(COLOURS)}")
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; the shapes are {', '.join(SHAPES)}")
        rows.append((COLOURS.index(colour), SHAPES.index(shape)))
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2)


def random_scenes(n_scenes: int, n_objects: int, n_colours: int = len(COLOURS),
                  n_shapes: int = len(SHAPES), generator: torch.Generator | None = None
                  ) -> Int[Tensor, "scenes objects 2"]:
    """Random scenes in which no two objects share a colour or a shape (so swapping the
    colours of two objects always gives a different scene)."""
    if n_objects > min(n_colours, n_shapes):
        raise ValueError(f"{n_objects} objects need at least {n_objects} colours and shapes; "
                         f"there are {n_colours} colours and {n_shapes} shapes")
    colours = torch.rand(n_scenes, n_colours, generator=generator).argsort(-1)[:, :n_objects]
    shapes = torch.rand(n_scenes, n_shapes, generator=generator).argsort(-1)[:, :n_objects]
    return torch.stack([colours, shapes], dim=-1)


def swap_colours(scenes: Int[Tensor, "scenes objects 2"]) -> Int[Tensor, "scenes objects 2"]:
    """The attribute-swapped scenes: objects 0 and 1 exchange colours, shapes stay put."""
    swapped = scenes.clone()
    swapped[:, [0, 1], 0] = scenes[:, [1, 0], 0]
    return swapped


# --------------------------------------------------------------------------- binding schemes


def bag_of_features(scenes: Int[Tensor, "scenes objects 2"], colour_vecs: Float[Tensor, "colours d"],
                    shape_vecs: Float[Tensor, "shapes d"]) -> Float[Tensor, "scenes d"]:
    """The bag-of-directions representation: x = Σ_i (C[c_i] + S[s_i]).

    Computed from counts (how often each colour and each shape occurs), which makes plain the
    point of the section: x depends only on the multisets of colours and shapes, so two scenes
    that differ only in who has which colour get bit-identical vectors.
    """
    colour_counts = F.one_hot(scenes[..., 0], len(colour_vecs)).sum(-2).float()
    shape_counts = F.one_hot(scenes[..., 1], len(shape_vecs)).sum(-2).float()
    return colour_counts @ colour_vecs + shape_counts @ shape_vecs


def tensor_product_bind(roles: Float[Tensor, "n d_r"], fillers: Float[Tensor, "n d_f"]) -> Float[Tensor, "d_r d_f"]:
    """Smolensky's tensor product binding: T = Σ_i r_i f_iᵀ, a [d_r, d_f] matrix.

    Row i of ``roles`` is bound to row i of ``fillers``; different numbers of rows raise a
    ValueError. Plain tensor operations only: ``retrieval_accuracy`` runs it under
    ``torch.vmap``.
    """
    if roles.ndim != 2 or fillers.ndim != 2 or roles.shape[0] != fillers.shape[0]:
        raise ValueError(f"roles [n, d_r] and fillers [n, d_f] need the same number of rows n; "
                         f"got shapes {tuple(roles.shape)} and {tuple(fillers.shape)}")
    return einsum(roles, fillers, "n d_r, n d_f -> d_r d_f")


def tensor_product_unbind(T: Float[Tensor, "d_r d_f"], role: Float[Tensor, "d_r"]) -> Float[Tensor, "d_f"]:
    """The filler bound to ``role``: roleᵀ T = Σ_i (role · r_i) f_i.

    Exact when the roles are orthonormal; with random roles the other fillers leak in, weighted
    by their roles' overlap with ``role``. A role whose size is not d_r raises a ValueError
    that says so (rather than a shape error from deep inside torch). Plain tensor operations
    only: ``retrieve_colour_tensor`` runs it under ``torch.vmap``.
    """
    if role.ndim != 1 or role.shape[0] != T.shape[0]:
        raise ValueError(f"role must be a vector of size d_r = {T.shape[0]} (the number of rows of T), "
                         f"got shape {tuple(role.shape)}")
    return role @ T


def matrix_bind(scenes: Int[Tensor, "scenes objects 2"], colour_vecs: Float[Tensor, "colours d"],
                shape_vecs: Float[Tensor, "shapes d"], slot_maps: Float[Tensor, "slots d D"]
                ) -> Float[Tensor, "scenes D"]:
    """Slot binding by linear maps: x = Σ_k (C[c_k] + S[s_k]) M_k, object k in slot k.

    With M_k = R^k for one random rotation R this is the seed's matrix binding (dictionary
    [D; D·R; D·R²; ...]); with M_k = "write into block k of the output" it is binding by
    position (concatenation of slots).
    """
    n_objects, n_slots = scenes.shape[-2], slot_maps.shape[0]
    if n_objects > n_slots:
        raise ValueError(f"{n_objects} objects but only {n_slots} slot maps; give one map per object")
    objects = colour_vecs[scenes[..., 0]] + shape_vecs[scenes[..., 1]]  # [scenes, objects, d]
    return einsum(objects, slot_maps[:n_objects], "b k d, k d D -> b D")


def position_slot_maps(n_slots: int, d: int) -> Float[Tensor, "slots d D"]:
    """Binding by position: slot k copies its d-vector into dimensions [k·d, (k+1)·d)."""
    return rearrange(torch.eye(n_slots * d), "D (k d) -> k d D", k=n_slots)


def rotation_slot_maps(n_slots: int, d: int, generator: torch.Generator | None = None) -> Float[Tensor, "slots d d"]:
    """Matrix binding: slot k applies R^k, for one random orthogonal R (slot 0 is the identity)."""
    R, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
    maps = [torch.eye(d)]
    for _ in range(n_slots - 1):
        maps.append(maps[-1] @ R)
    return torch.stack(maps)


# --------------------------------------------------------------------------- retrieval


def retrieve_colour_bag(x: Float[Tensor, "scenes d"], colour_vecs: Float[Tensor, "colours d"],
                        query_shapes: Int[Tensor, "scenes"]) -> Int[Tensor, "scenes"]:
    """The best a bag can do: the colour most present in x, whatever the query."""
    return (x @ colour_vecs.T).argmax(-1)


def retrieve_colour_slots(x: Float[Tensor, "scenes D"], colour_vecs: Float[Tensor, "colours d"],
                          shape_vecs: Float[Tensor, "shapes d"], slot_maps: Float[Tensor, "slots d D"],
                          query_shapes: Int[Tensor, "scenes"]) -> Int[Tensor, "scenes"]:
    """Find the slot k whose copy of the query shape, S[s] M_k, best matches x; then the
    colour c whose slot-k copy C[c] M_k best matches x."""
    shapes_in_slots = einsum(shape_vecs, slot_maps, "s d, k d D -> s k D")[query_shapes]
    slot = einsum(shapes_in_slots, x, "b k D, b D -> b k").argmax(-1)
    colours_in_slots = einsum(colour_vecs, slot_maps, "c d, k d D -> k c D")
    colour_scores = einsum(x, colours_in_slots, "b D, k c D -> b k c")
    return colour_scores[torch.arange(len(x)), slot].argmax(-1)


def retrieve_colour_tensor(T: Float[Tensor, "scenes d_r d_f"], colour_vecs: Float[Tensor, "colours d_f"],
                           shape_vecs: Float[Tensor, "shapes d_r"], query_shapes: Int[Tensor, "scenes"]
                           ) -> Int[Tensor, "scenes"]:
    """Unbind with the query shape as the role, then the nearest colour by cosine."""
    filler = torch.vmap(tensor_product_unbind)(T, shape_vecs[query_shapes])
    return (F.normalize(filler, dim=-1) @ F.normalize(colour_vecs, dim=-1).T).argmax(-1)


def retrieval_accuracy(scheme: str, D: int, n_objects: Sequence[int], n_scenes: int = 500, n_symbols: int = 50,
                       n_slots: int = 8, seed: int = 0) -> list[float]:
    """How often "what colour is the <shape>?" is answered right from one D-dimensional code,
    for scenes of each number of objects in ``n_objects``.

    ``n_symbols`` random colour and shape vectors; the query is a random object's shape.
    Codebooks are random Gaussian vectors, of size D/n_slots for position slots, √D for tensor
    products (d_r = d_f = √D), and D otherwise.
    """
    g = torch.Generator().manual_seed(seed)
    d = {"position": D // n_slots, "tensor": round(D ** 0.5)}.get(scheme, D)
    if scheme == "tensor" and d * d != D:
        raise ValueError(f"tensor products need a square dimension D = d_r·d_f, got {D}")
    colour_vecs = torch.randn(n_symbols, d, generator=g) / d ** 0.5
    shape_vecs = torch.randn(n_symbols, d, generator=g) / d ** 0.5
    maps = {"position": lambda: position_slot_maps(n_slots, d),
            "matrix": lambda: rotation_slot_maps(n_slots, d, g)}.get(scheme, lambda: None)()
    accuracies = []
    for n in n_objects:
        scenes = random_scenes(n_scenes, n, n_symbols, n_symbols, generator=g)
        which = torch.randint(n, (n_scenes,), generator=g)
        query = scenes[torch.arange(n_scenes), which, 1]
        truth = scenes[torch.arange(n_scenes), which, 0]
        if scheme == "bag":
            answer = retrieve_colour_bag(bag_of_features(scenes, colour_vecs, shape_vecs), colour_vecs, query)
        elif scheme in ("position", "matrix"):
            x = matrix_bind(scenes, colour_vecs, shape_vecs, maps)
            answer = retrieve_colour_slots(x, colour_vecs, shape_vecs, maps, query)
        elif scheme == "tensor":
            T = torch.vmap(tensor_product_bind)(shape_vecs[scenes[..., 1]], colour_vecs[scenes[..., 0]])
            answer = retrieve_colour_tensor(T, colour_vecs, shape_vecs, query)
        else:
            raise ValueError(f"unknown scheme {scheme!r}; use 'bag', 'position', 'matrix' or 'tensor'")
        accuracies.append((answer == truth).float().mean().item())
    return accuracies


# --------------------------------------------------------------------------- the matrix-binding SAE


def matrix_binding_data(n_samples: int, atoms: Float[Tensor, "atoms d"], R: Float[Tensor, "d d"],
                        p_active: float, generator: torch.Generator | None = None
                        ) -> tuple[Float[Tensor, "samples d"], Float[Tensor, "samples latents"]]:
    """Activations made by matrix binding with two slots: x = z₀ D + z₁ D R.

    Each of the 2·atoms latents (slot 0 then slot 1) is on with probability ``p_active``, with
    a magnitude Uniform[0, 1). Returns ``(x, z)`` with z = [z₀, z₁], on the atoms' device (the
    draws are made on the CPU, so a CPU and a GPU run see the same data).
    """
    n_atoms = atoms.shape[0]
    on = torch.rand(n_samples, 2 * n_atoms, generator=generator) < p_active
    z = (on * torch.rand(n_samples, 2 * n_atoms, generator=generator)).to(atoms.device)
    return z @ torch.cat([atoms, atoms @ R]), z


class PlainSAE(nn.Module):
    """The baseline: a ReLU SAE with a free decoder of unit-norm rows (chapter 4's SAE, kept
    minimal here)."""

    def __init__(self, d_in: int, d_sae: int, generator: torch.Generator | None = None):
        super().__init__()
        self.W_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=generator) / d_in ** 0.5)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.randn(d_sae, d_in, generator=generator) / d_in ** 0.5)
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def dictionary(self) -> Float[Tensor, "d_sae d_in"]:
        return F.normalize(self.W_dec, dim=-1)

    def forward(self, x: Float[Tensor, "batch d_in"]) -> tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch d_sae"]]:
        z = F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        return z @ self.dictionary() + self.b_dec, z


class MatrixBindingSAE(nn.Module):
    """An SAE whose dictionary is [D; D·R]: the second half is a learned linear map of the first.

    Parameters: ``W_enc [d_in, 2·n_atoms]``, ``b_enc [2·n_atoms]``, ``atoms [n_atoms, d_in]``
    (D), ``R [d_in, d_in]``, ``b_dec [d_in]``. Latents 0..n_atoms-1 use the atoms, the rest
    their images under R. ``train_saes`` trains several at once under ``torch.vmap``, so
    ``dictionary`` and ``forward`` must be plain tensor operations on these parameters (no
    ``.item()``, no writing into a pre-made tensor).
    """

    def __init__(self, d_in: int, n_atoms: int, generator: torch.Generator | None = None):
        super().__init__()
        self.W_enc = nn.Parameter(torch.randn(d_in, 2 * n_atoms, generator=generator) / d_in ** 0.5)
        self.b_enc = nn.Parameter(torch.zeros(2 * n_atoms))
        self.atoms = nn.Parameter(torch.randn(n_atoms, d_in, generator=generator) / d_in ** 0.5)
        self.R = nn.Parameter(torch.eye(d_in) + torch.randn(d_in, d_in, generator=generator) / d_in ** 0.5)
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def dictionary(self) -> Float[Tensor, "latents d_in"]:
        """[D; D·R] with every row scaled to unit norm: ``[2·n_atoms, d_in]``."""
        return F.normalize(torch.cat([self.atoms, self.atoms @ self.R]), dim=-1)

    def forward(self, x: Float[Tensor, "batch d_in"]) -> tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch latents"]]:
        """z = ReLU((x - b_dec) W_enc + b_enc), x̂ = z · dictionary + b_dec; returns (x̂, z)."""
        z = F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        return z @ self.dictionary() + self.b_dec, z


@torch.no_grad()
def start_at_truth(sae: nn.Module, atoms: Float[Tensor, "atoms d"], R: Float[Tensor, "d d"]) -> nn.Module:
    """Put an SAE at the true solution: its dictionary [D; D·R] (for a ``MatrixBindingSAE``,
    its atoms and R), its encoder the dictionary's transpose, its biases zero."""
    dictionary = torch.cat([atoms, atoms @ R])
    for bias in (sae.b_enc, sae.b_dec):
        bias.zero_()
    sae.W_enc.copy_(F.normalize(dictionary, dim=-1).T)
    if isinstance(sae, MatrixBindingSAE):
        sae.atoms.copy_(atoms)
        sae.R.copy_(R)
    else:
        sae.W_dec.copy_(dictionary)
    return sae


def train_saes(saes: Sequence[nn.Module], atoms: Tensor, R: Tensor, p_active: float, l1_coeff: float = 0.3,
               steps: int = 1500, batch_size: int = 256, lr: float = 1e-2, seed: int = 0
               ) -> Float[Tensor, "steps saes"]:
    """Train SAEs of one class side by side on the same fresh batches of ``matrix_binding_data``.

    Their parameters are stacked (``torch.func.stack_module_state``) and one forward pass under
    ``torch.vmap`` runs them all; Adam (cosine-decayed learning rate) on the sum of their
    chapter-4 ``sae_loss`` values trains each on its own loss. The trained parameters are
    loaded back into ``saes``. Returns the training losses, ``[steps, saes]``.
    """
    params, buffers = stack_module_state(list(saes))
    skeleton = copy.deepcopy(saes[0]).to("meta")
    run = torch.vmap(lambda p, b, x: functional_call(skeleton, (p, b), (x,)), in_dims=(0, 0, None))
    optimiser = torch.optim.Adam(params.values(), lr=lr, foreach=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc=f"{len(saes)} {type(saes[0]).__name__}s"):
        x, _ = matrix_binding_data(batch_size, atoms, R, p_active, generator=g)
        x_hat, z = run(params, buffers, x)
        loss = torch.stack([sae_loss(x, x_hat[i], z[i], l1_coeff) for i in range(len(saes))])
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.detach())
    for i, sae in enumerate(saes):
        sae.load_state_dict({name: value[i].detach() for name, value in params.items()})
    return torch.stack(losses).cpu()


def pairs_found(sae: nn.Module, atoms: Float[Tensor, "atoms d"], R: Float[Tensor, "d d"],
                threshold: float = 0.9) -> float:
    """Fraction of true pairs (D_j, D_j R) learned as a pair of latents (a, a + n_atoms), both
    with cosine above ``threshold``: the layout [D; D·R] that a matrix-binding SAE assumes."""
    learned = sae.dictionary().detach()
    first = F.normalize(atoms, dim=-1) @ learned.T
    second = F.normalize(atoms @ R, dim=-1) @ learned.T
    found = (first.max(-1).values > threshold) & (second.max(-1).values > threshold)
    return (found & (second.argmax(-1) == first.argmax(-1) + len(atoms))).float().mean().item()


def matrix_cosine(A: Float[Tensor, "m n"], B: Float[Tensor, "m n"]) -> float:
    """cos(A, B) = ⟨A, B⟩ / (‖A‖ ‖B‖), Frobenius: 1 for the same map up to scale, about 0 for
    unrelated random maps."""
    return ((A * B).sum() / (A.norm() * B.norm())).item()


@torch.no_grad()
def sae_scores(sae: nn.Module, x: Float[Tensor, "samples d"], atoms: Float[Tensor, "atoms d"],
               R: Float[Tensor, "d d"], l1_coeff: float) -> dict[str, float]:
    """How an SAE does on held-out data ``x`` from ``matrix_binding_data(atoms, R)``: its loss,
    MMCS against the true dictionary [D; D·R], the fraction of pairs found, and, for a
    ``MatrixBindingSAE``, the cosine of its R with the true R and with R⁻¹ (which it would
    learn if it put the slot-1 atoms in its first half)."""
    x_hat, z = sae(x)
    scores = {"loss": sae_loss(x, x_hat, z, l1_coeff).item(),
              "mmcs": mean_max_cosine_similarity(sae.dictionary(), torch.cat([atoms, atoms @ R])).item(),
              "pairs": pairs_found(sae, atoms, R)}
    if isinstance(sae, MatrixBindingSAE):
        scores |= {"R vs R": matrix_cosine(sae.R, R), "R vs R⁻¹": matrix_cosine(sae.R, torch.linalg.inv(R))}
    return scores


# --------------------------------------------------------------------------- a real encoder: MiniLM

TEMPLATES = ("a {0} and a {1}", "a {0} next to a {1}", "a {0} beside a {1}",
             "there is a {0} and a {1}", "a photo of a {0} and a {1}")


def captions(scenes: Int[Tensor, "scenes 2 2"], templates: Sequence[str] = TEMPLATES,
             order: Sequence[int] = (0, 1)) -> list[str]:
    """One caption per two-object scene, scene i using template i mod len(templates);
    ``order=(1, 0)`` mentions the second object first (the paraphrase)."""
    out = []
    for i, scene in enumerate(scenes.tolist()):
        names = [f"{COLOURS[c]} {SHAPES[s]}" for c, s in scene]
        out.append(templates[i % len(templates)].format(*(names[k] for k in order)))
    return out


def mean_pool(hidden: Float[Tensor, "batch seq d"], attention_mask: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch d"]:
    """Sentence embedding: the mean of the hidden states over real tokens (mask 1), padding
    ignored. This is the pooling all-MiniLM-L6-v2 was trained with."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@torch.no_grad()
def sentence_embeddings(texts: Sequence[str], model, tokenizer, batch_size: int = 128) -> Float[Tensor, "texts d"]:
    """Mean-pooled last hidden states of a BERT-style model, on the CPU."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start: start + batch_size]), return_tensors="pt", padding=True).to(device)
        hidden = model(**batch).last_hidden_state
        out.append(mean_pool(hidden, batch["attention_mask"]).float().cpu())
    return torch.cat(out)


def swap_test_accuracy(anchor: Float[Tensor, "n d"], positive: Float[Tensor, "n d"],
                       negative: Float[Tensor, "n d"]) -> float:
    """How often cos(anchor, positive) > cos(anchor, negative), a tie counting one half.

    Chance is 0.5; an encoder that cannot tell the two apart (a bag of words) scores exactly
    0.5 through ties.
    """
    cos_pos = F.cosine_similarity(anchor, positive, dim=-1)
    cos_neg = F.cosine_similarity(anchor, negative, dim=-1)
    return ((cos_pos > cos_neg).float() + 0.5 * (cos_pos == cos_neg).float()).mean().item()


@torch.no_grad()
def positional_bag(texts: Sequence[str], model, tokenizer) -> tuple[Float[Tensor, "texts seq d"], Int[Tensor, "texts seq"]]:
    """A model of word order that cannot bind: a BERT's (MiniLM's) embedding layer alone.

    Each token's vector is LayerNorm(word embedding + position embedding): it depends on which
    word sits at which position, and never on the other words (no attention). Returns
    ``(token vectors, attention mask)`` on the CPU; pool them with ``mean_pool``. Averaging the
    token vectors of two captions of equal length before pooling makes the result independent,
    bit for bit, of the order in which the two come.
    """
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    tokens = model.embeddings(input_ids=batch["input_ids"].to(next(model.parameters()).device))
    return tokens.float().cpu(), batch["attention_mask"]


def cosine_effects(anchor: Float[Tensor, "n d"], same: Float[Tensor, "n d"], same_reordered: Float[Tensor, "n d"],
                   swapped: Float[Tensor, "n d"], swapped_reordered: Float[Tensor, "n d"]) -> dict[str, float]:
    """Split the mean cosine with the anchor of four captions into binding and word order.

    The captions describe the anchor's scene (``same``, in the anchor's order of mention, and
    ``same_reordered``) and its colour-swapped scene (``swapped``: shapes in the anchor's order,
    colours exchanged; ``swapped_reordered``: colours in the anchor's order, shapes exchanged).
    Solves mean cos = base + binding·[same scene] + colour order·[colours in the anchor's order]
    + shape order·[shapes in the anchor's order], four equations in four unknowns.
    """
    same, same_reordered, swapped, swapped_reordered = (
        F.cosine_similarity(anchor, other, dim=-1).mean().item()
        for other in (same, same_reordered, swapped, swapped_reordered))
    return {"binding": (same + same_reordered - swapped - swapped_reordered) / 2,
            "colour order": (same - same_reordered + swapped_reordered - swapped) / 2,
            "shape order": (same - same_reordered - swapped_reordered + swapped) / 2}


def ridge_probe(X_train: Float[Tensor, "n d"], y_train: Int[Tensor, "n"], X_test: Float[Tensor, "m d"],
                n_classes: int, l2: float = 1.0) -> Int[Tensor, "m"]:
    """A linear classifier in closed form: ridge regression onto one-hot labels.

    With X and Y centred by their training means, W = (XᵀX + l2·I)⁻¹ XᵀY; a test row is
    predicted as argmax((x - mean_X) W + mean_Y).
    """
    Y = F.one_hot(y_train, n_classes).to(X_train.dtype)
    x_mean, y_mean = X_train.mean(0), Y.mean(0)
    Xc = X_train - x_mean
    identity = torch.eye(X_train.shape[1], dtype=X_train.dtype, device=X_train.device)
    W = torch.linalg.solve(Xc.T @ Xc + l2 * identity, Xc.T @ (Y - y_mean))
    return ((X_test - x_mean) @ W + y_mean).argmax(-1)


# --------------------------------------------------------------------------- a tiny CLIP

WORDS = ("a", "and") + COLOURS + SHAPES


def _shape_mask(shape: str, x: Tensor, y: Tensor) -> Tensor:
    """A shape's silhouette at coordinates (x, y), measured from the object's centre in units
    of its half-width: 1 inside, 0 outside. The silhouettes differ in size and outline, so that
    telling them apart is easy and the experiment is about binding, not about vision."""
    r = (x ** 2 + y ** 2).sqrt()
    if shape == "cube":
        return ((x.abs() < 0.6) & (y.abs() < 0.6)).float()
    if shape == "sphere":
        return (r < 0.95).float()
    if shape == "cone":
        return ((y.abs() < 0.9) & (x.abs() < (y + 0.9) / 1.8 * 0.95)).float()
    if shape == "cylinder":
        return ((x.abs() < 0.3) & (y.abs() < 0.95)).float()
    if shape == "ring":
        return ((r < 0.95) & (r > 0.55)).float()
    raise ValueError(f"unknown shape {shape!r}; the shapes are {', '.join(SHAPES)}")


def render_scenes(scenes: Int[Tensor, "scenes 2 2"], size: int = 32, generator: torch.Generator | None = None
                  ) -> Float[Tensor, "scenes 3 size size"]:
    """Images of two-object scenes: object 0 in the left half, object 1 in the right half, at
    a random height and horizontal jitter, on a grey background with a little noise (on the CPU)."""
    scenes = scenes.cpu()
    n = scenes.shape[0]
    radius = size * 3 / 16  # objects are 3/8 of the image wide
    grid = torch.arange(size) + 0.5
    images = torch.full((n, 3, size, size), 0.5)
    for k in range(2):
        cx = k * size / 2 + radius + torch.rand(n, generator=generator) * (size / 2 - 2 * radius)
        cy = radius + torch.rand(n, generator=generator) * (size - 2 * radius)
        x = ((grid[None, None, :] - cx[:, None, None]) / radius).expand(n, size, size)
        y = ((grid[None, :, None] - cy[:, None, None]) / radius).expand(n, size, size)
        mask = torch.zeros(n, 1, size, size)
        for index, shape in enumerate(SHAPES):  # each image draws only its own shape
            rows = scenes[:, k, 1] == index
            mask[rows, 0] = _shape_mask(shape, x[rows], y[rows])
        colour = torch.tensor(RGB)[scenes[:, k, 0]][:, :, None, None]  # [n, 3, 1, 1]
        images = images * (1 - mask) + colour * mask
    return (images + 0.03 * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def caption_tokens(scenes: Int[Tensor, "scenes 2 2"], first: Int[Tensor, "scenes"]) -> Int[Tensor, "scenes 7"]:
    """Word indices into ``WORDS`` of "a <colour> <shape> and a <colour> <shape>", mentioning
    object ``first[i]`` first."""
    n = scenes.shape[0]
    rows = torch.arange(n, device=scenes.device)[:, None]
    ordered = scenes[rows, torch.stack([first, 1 - first], dim=-1)]  # [n, 2 objects, 2]
    colour = ordered[..., 0] + WORDS.index(COLOURS[0])
    shape = ordered[..., 1] + WORDS.index(SHAPES[0])
    a, and_ = torch.full_like(first, WORDS.index("a")), torch.full_like(first, WORDS.index("and"))
    return torch.stack([a, colour[:, 0], shape[:, 0], and_, a, colour[:, 1], shape[:, 1]], dim=-1)


class ImageEncoder(nn.Module):
    """[batch, 3, 32, 32] -> [batch, d_embed]: each 4×4 patch through a linear map, 2×2
    neighbouring patches merged, the strongest response kept over each half of the image
    (object 0 is drawn in the left half, object 1 in the right), then an MLP.

    Linear maps only (no convolutions), so that many copies train fast under torch.vmap.
    """

    def __init__(self, d_embed: int = 64, width: int = 16, patch: int = 4):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(3 * patch * patch, width)
        self.merge = nn.Linear(4 * width, 2 * width)
        self.head = nn.Sequential(nn.Linear(4 * width, 128), nn.ReLU(), nn.Linear(128, d_embed))

    def forward(self, images: Float[Tensor, "batch 3 32 32"]) -> Float[Tensor, "batch d_embed"]:
        patches = rearrange(images, "b c (h p1) (w p2) -> b h w (c p1 p2)", p1=self.patch, p2=self.patch)
        features = F.relu(self.embed(patches))
        features = F.relu(self.merge(rearrange(features, "b (h i) (w j) e -> b h w (i j e)", i=2, j=2)))
        halves = reduce(features, "b h (half w) e -> b (half e)", "max", half=2)
        return self.head(halves)


class BagOfWordsTextEncoder(nn.Module):
    """Word counts -> an MLP. Word order is thrown away before anything is learned."""

    def __init__(self, d_embed: int = 64, d_hidden: int = 128):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(len(WORDS), d_hidden) * 0.1)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(d_hidden, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_embed))

    def forward(self, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch d_embed"]:
        counts = F.one_hot(tokens, len(WORDS)).sum(-2).to(self.embed.dtype)  # identical for any reordering
        return self.mlp(counts @ self.embed)


class OrderAwareTextEncoder(nn.Module):
    """Word + position embeddings, concatenated over positions, then an MLP."""

    def __init__(self, seq_len: int = 7, d_embed: int = 64, d_word: int = 32, d_hidden: int = 128):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(len(WORDS), d_word) * 0.1)
        self.position = nn.Parameter(torch.randn(seq_len, d_word) * 0.1)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(seq_len * d_word, d_hidden), nn.ReLU(),
                                 nn.Linear(d_hidden, d_embed))

    def forward(self, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch d_embed"]:
        return self.mlp(rearrange(self.embed[tokens] + self.position, "b s h -> b (s h)"))


class MiniCLIP(nn.Module):
    """An image tower and a text tower; ``forward`` embeds images, their captions and the
    colour-swapped captions."""

    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.image = ImageEncoder()
        self.text = text_encoder

    def forward(self, images: Float[Tensor, "batch 3 32 32"], tokens: Int[Tensor, "batch seq"],
                swapped_tokens: Int[Tensor, "batch seq"]) -> tuple[Tensor, Tensor, Tensor]:
        return self.image(images), self.text(tokens), self.text(swapped_tokens)


def contrastive_loss(image_emb: Float[Tensor, "batch d"], text_emb: Float[Tensor, "batch d"],
                     temperature: float = 0.1, hard_negatives: Float[Tensor, "batch d"] | None = None
                     ) -> Float[Tensor, ""]:
    """CLIP's symmetric InfoNCE loss, with optional hard-negative captions.

    Embeddings are L2-normalised; logits are cosines / temperature. Image i must pick caption
    i among all captions of the batch and, if given, all hard negatives too ([batch, 2·batch]
    logits); caption i must pick image i among the batch's images. The loss is the mean of the
    two cross-entropies.
    """
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    candidates = text_emb if hard_negatives is None else torch.cat([text_emb, F.normalize(hard_negatives, dim=-1)])
    targets = torch.arange(len(image_emb), device=image_emb.device)
    image_to_text = image_emb @ candidates.T / temperature
    text_to_image = text_emb @ image_emb.T / temperature
    return (F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets)) / 2


def swap_test_set(n_scenes: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(images, captions, swapped captions)`` of fresh random scenes, each caption mentioning
    its objects in a random order (the swapped caption in the same order)."""
    g = torch.Generator().manual_seed(seed)
    scenes = random_scenes(n_scenes, 2, generator=g)
    first = torch.randint(2, (n_scenes,), generator=g)
    return render_scenes(scenes, generator=g), caption_tokens(scenes, first), \
        caption_tokens(swap_colours(scenes), first)


def train_mini_clips(make_text_encoder: Callable[[], nn.Module], seeds: Sequence[int],
                     hard_negatives: Sequence[bool], steps: int = 1000, batch_size: int = 128,
                     n_train: int = 4096, lr: float = 3e-3, temperature: float = 0.1,
                     eval_every: int = 100, n_eval: int = 500, device: torch.device | str = "cpu"
                     ) -> tuple[list[MiniCLIP], Float[Tensor, "evals models"], Float[Tensor, "steps models"]]:
    """Train one ``MiniCLIP`` per (seed, hard_negatives) pair, all at once.

    The models' parameters are stacked (``torch.func.stack_module_state``) and one forward
    pass under ``torch.vmap`` runs every model on the same batch; Adam (cosine-decayed learning
    rate, so that training ends on a plateau) on the sum of their ``contrastive_loss`` values
    trains each on its own loss. ``seeds[i]`` sets model i's initialisation; with
    ``hard_negatives[i]`` its images also see their colour-swapped captions as wrong answers. The training set is ``n_train`` rendered scenes (seed 0); each
    step draws a batch and a random order of mention for each caption.

    Returns the trained models, the swapped-caption accuracy of each on ``n_eval`` fresh scenes
    every ``eval_every`` steps (``[steps // eval_every, models]``), and the training losses.
    """
    g = torch.Generator().manual_seed(0)
    scenes = random_scenes(n_train, 2, generator=g)
    images = render_scenes(scenes, generator=g).to(device)
    held_out = [part.to(device) for part in swap_test_set(n_eval, seed=2)]
    models = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):  # the towers' initialisation, without touching the global RNG
            torch.manual_seed(seed)
            models.append(MiniCLIP(make_text_encoder()).to(device))
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    run = torch.vmap(lambda p, b, *inputs: functional_call(skeleton, (p, b), inputs), in_dims=(0, 0, None, None, None))
    optimiser = torch.optim.Adam(params.values(), lr=lr, foreach=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    accuracy, losses = [], []
    for step in tqdm(range(1, steps + 1), desc="mini-CLIPs"):
        batch = torch.randint(n_train, (batch_size,), generator=g)
        first = torch.randint(2, (batch_size,), generator=g)
        tokens = caption_tokens(scenes[batch], first).to(device)
        swapped = caption_tokens(swap_colours(scenes[batch]), first).to(device)
        image_emb, text_emb, swapped_emb = run(params, buffers, images[batch.to(device)], tokens, swapped)
        loss = torch.stack([contrastive_loss(image_emb[i], text_emb[i], temperature,
                                             swapped_emb[i] if hard else None)
                            for i, hard in enumerate(hard_negatives)])
        optimiser.zero_grad()
        loss.sum().backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.detach())
        if step % eval_every == 0:
            with torch.no_grad():
                image_emb, text_emb, swapped_emb = run(params, buffers, *held_out)
            accuracy.append([swap_test_accuracy(*embeddings) for embeddings in zip(image_emb, text_emb, swapped_emb)])
    for i, model in enumerate(models):
        model.load_state_dict({name: value[i].detach() for name, value in params.items()})
    return [model.eval() for model in models], torch.tensor(accuracy), torch.stack(losses).cpu()


@torch.no_grad()
def mini_clip_accuracy(model: MiniCLIP, n_scenes: int = 2000, seed: int = 1) -> dict[str, float]:
    """Fresh images, each against its caption and a wrong one: the colour-swapped caption
    ("swapped"), or the caption of another random scene ("other"), which needs no binding."""
    device = next(model.parameters()).device
    images, tokens, swapped = (part.to(device) for part in swap_test_set(n_scenes, seed))
    image_emb, text_emb, swapped_emb = model(images, tokens, swapped)
    other_emb = text_emb.roll(1, dims=0)  # the next scene's caption
    return {"swapped": swap_test_accuracy(image_emb, text_emb, swapped_emb),
            "other": swap_test_accuracy(image_emb, text_emb, other_emb)}


# --------------------------------------------------------------------------- a real CLIP or SigLIP


def load_clip(path: str | Path):
    """``(model, tokenizer, image_processor)`` from a local CLIP or SigLIP directory, the model
    in eval mode on ``device()`` (the GPU when there is one).

    Anything whose model has no ``get_text_features``/``get_image_features`` (a text-only model
    such as MiniLM, say) is refused with a ValueError; nothing is downloaded.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {path}: expected a local CLIP or SigLIP directory written "
                                "by save_pretrained (model, tokenizer and image processor)")
    config = AutoConfig.from_pretrained(path)
    if not (hasattr(config, "text_config") and hasattr(config, "vision_config")):
        raise ValueError(f"{path} holds a {type(config).__name__}, not a CLIP-like dual encoder (a config "
                         "with text_config and vision_config, such as CLIPConfig or SiglipConfig)")
    model = AutoModel.from_pretrained(path).eval().to(device())
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise ValueError(f"{type(model).__name__} in {path} has no get_text_features/get_image_features; "
                         "the swapped-caption test needs a CLIP-like dual encoder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} lacks a tokenizer or image processor that transformers can load "
                         f"(save both next to the model): {exc}") from None
    return model, tokenizer, image_processor


def _features(output) -> Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return output if isinstance(output, Tensor) else output.pooler_output


@torch.no_grad()
def clip_swap_test(model, tokenizer, image_processor, n_scenes: int = 200, size: int = 64,
                   seed: int = 0) -> float:
    """The swapped-caption test on a real CLIP/SigLIP: rendered two-object images, captions
    like "a red cube and a blue sphere" (random order) against their colour-swapped version."""
    g = torch.Generator().manual_seed(seed)
    scenes = random_scenes(n_scenes, 2, generator=g)
    first = torch.randint(2, (n_scenes,), generator=g).tolist()
    true_captions = captions(scenes, ("a {0} and a {1}",), order=(0, 1))
    swapped_captions = captions(swap_colours(scenes), ("a {0} and a {1}",), order=(0, 1))
    reverse = captions(scenes, ("a {0} and a {1}",), order=(1, 0))
    reverse_swapped = captions(swap_colours(scenes), ("a {0} and a {1}",), order=(1, 0))
    true_captions = [r if f else t for t, r, f in zip(true_captions, reverse, first)]
    swapped_captions = [r if f else t for t, r, f in zip(swapped_captions, reverse_swapped, first)]
    images = render_scenes(scenes, size=size, generator=g)
    pixels = image_processor(images=[img.permute(1, 2, 0).numpy() for img in images], return_tensors="pt",
                             do_rescale=False)["pixel_values"].to(model.device)
    image_emb = _features(model.get_image_features(pixel_values=pixels)).float().cpu()

    # SigLIP was trained on captions padded to its full text length; CLIP pads to the longest
    siglip = "siglip" in type(model).__name__.lower()
    max_length = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)

    def embed(texts):
        batch = tokenizer(texts, padding="max_length" if siglip else True, max_length=max_length,
                          truncation=True, return_tensors="pt").to(model.device)
        return _features(model.get_text_features(**{k: v for k, v in batch.items()
                                                    if k in ("input_ids", "attention_mask")})).float().cpu()

    return swap_test_accuracy(image_emb, embed(true_captions), embed(swapped_captions))
