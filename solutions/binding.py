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

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from solutions.saes import sae_loss  # chapter 4

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
    ValueError.
    """
    if roles.ndim != 2 or fillers.ndim != 2 or roles.shape[0] != fillers.shape[0]:
        raise ValueError(f"roles [n, d_r] and fillers [n, d_f] need the same number of rows n; "
                         f"got shapes {tuple(roles.shape)} and {tuple(fillers.shape)}")
    return einsum(roles, fillers, "n d_r, n d_f -> d_r d_f")


def tensor_product_unbind(T: Float[Tensor, "d_r d_f"], role: Float[Tensor, "d_r"]) -> Float[Tensor, "d_f"]:
    """The filler bound to ``role``: roleᵀ T = Σ_i (role · r_i) f_i.

    Exact when the roles are orthonormal; with random roles the other fillers leak in, weighted
    by their roles' overlap with ``role``. A role whose size is not d_r raises a ValueError
    that says so (rather than a shape error from deep inside torch).
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
    a magnitude Uniform[0, 1). Returns ``(x, z)`` with z = [z₀, z₁].
    """
    n_atoms = atoms.shape[0]
    on = torch.rand(n_samples, 2 * n_atoms, generator=generator) < p_active
    z = on * torch.rand(n_samples, 2 * n_atoms, generator=generator)
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
    their images under R.
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


def train_sae(sae: nn.Module, atoms: Tensor, R: Tensor, p_active: float, l1_coeff: float = 0.1,
              steps: int = 1000, batch_size: int = 256, lr: float = 1e-2, seed: int = 0) -> list[float]:
    """Adam on chapter 4's ``sae_loss`` (squared error summed over d + l1_coeff · Σ|z|), fresh
    data each step."""
    g = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(sae.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    losses = []
    for _ in range(steps):
        x, _ = matrix_binding_data(batch_size, atoms, R, p_active, generator=g)
        x_hat, z = sae(x)
        loss = sae_loss(x, x_hat, z, l1_coeff)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    return losses


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


def ridge_probe(X_train: Float[Tensor, "n d"], y_train: Int[Tensor, "n"], X_test: Float[Tensor, "m d"],
                n_classes: int, l2: float = 1.0) -> Int[Tensor, "m"]:
    """A linear classifier in closed form: ridge regression onto one-hot labels.

    With X and Y centred by their training means, W = (XᵀX + l2·I)⁻¹ XᵀY; a test row is
    predicted as argmax((x - mean_X) W + mean_Y).
    """
    Y = F.one_hot(y_train, n_classes).to(X_train.dtype)
    x_mean, y_mean = X_train.mean(0), Y.mean(0)
    Xc = X_train - x_mean
    W = torch.linalg.solve(Xc.T @ Xc + l2 * torch.eye(X_train.shape[1]), Xc.T @ (Y - y_mean))
    return ((X_test - x_mean) @ W + y_mean).argmax(-1)


# --------------------------------------------------------------------------- a tiny CLIP

WORDS = ("a", "and") + COLOURS + SHAPES


def _shape_mask(shape: str, x: Tensor, y: Tensor) -> Tensor:
    """A shape's silhouette at coordinates (x, y), measured from the object's centre in units
    of its half-width: 1 inside, 0 outside."""
    r = (x ** 2 + y ** 2).sqrt()
    if shape == "cube":
        return ((x.abs() < 0.75) & (y.abs() < 0.75)).float()
    if shape == "sphere":
        return (r < 0.85).float()
    if shape == "cone":
        return ((y.abs() < 0.8) & (x.abs() < (y + 0.8) / 1.6 * 0.85)).float()
    if shape == "cylinder":
        return ((x.abs() < 0.4) & (y.abs() < 0.9)).float()
    if shape == "ring":
        return ((r < 0.9) & (r > 0.5)).float()
    raise ValueError(f"unknown shape {shape!r}; the shapes are {', '.join(SHAPES)}")


def render_scenes(scenes: Int[Tensor, "scenes 2 2"], size: int = 32, generator: torch.Generator | None = None
                  ) -> Float[Tensor, "scenes 3 size size"]:
    """Images of two-object scenes: object 0 in the left half, object 1 in the right half, at
    a random height and horizontal jitter, on a grey background with a little noise."""
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
    order = torch.stack([first, 1 - first], dim=-1)  # [n, 2]
    ordered = scenes[torch.arange(n)[:, None], order]  # [n, 2, 2]
    colour = ordered[..., 0] + 2
    shape = ordered[..., 1] + 2 + len(COLOURS)
    a, and_ = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    return torch.stack([a, colour[:, 0], shape[:, 0], and_, a, colour[:, 1], shape[:, 1]], dim=-1)


class ImageEncoder(nn.Module):
    """A small CNN: [batch, 3, 32, 32] -> [batch, d_embed]."""

    def __init__(self, d_embed: int = 64, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * 8 * 8, 128), nn.ReLU(), nn.Linear(128, d_embed))

    def forward(self, images: Float[Tensor, "batch 3 32 32"]) -> Float[Tensor, "batch d_embed"]:
        return self.net(images)


class BagOfWordsTextEncoder(nn.Module):
    """Word counts -> an MLP. Word order is thrown away before anything is learned."""

    def __init__(self, d_embed: int = 64, d_hidden: int = 128):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(len(WORDS), d_hidden) * 0.1)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(d_hidden, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_embed))

    def forward(self, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch d_embed"]:
        counts = F.one_hot(tokens, len(WORDS)).sum(1).float()  # identical for any reordering
        return self.mlp(counts @ self.embed)


class OrderAwareTextEncoder(nn.Module):
    """Word + position embeddings, concatenated over positions, then an MLP."""

    def __init__(self, seq_len: int = 7, d_embed: int = 64, d_hidden: int = 128):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(len(WORDS), 32) * 0.1)
        self.position = nn.Parameter(torch.randn(seq_len, 32) * 0.1)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(seq_len * 32, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_embed))

    def forward(self, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch d_embed"]:
        return self.mlp(rearrange(self.embed[tokens] + self.position, "b s h -> b (s h)"))


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


def train_mini_clip(text_encoder: nn.Module, hard_negatives: bool, steps: int = 600, batch_size: int = 256,
                    n_train: int = 8192, lr: float = 2e-3, temperature: float = 0.1, seed: int = 0
                    ) -> tuple[ImageEncoder, nn.Module, list[float]]:
    """Train an image tower and ``text_encoder`` together with ``contrastive_loss``.

    The training images are rendered once (``n_train`` random two-object scenes); each caption
    mentions its objects in a random order. With ``hard_negatives`` every image also sees its
    attribute-swapped caption as a wrong answer.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the towers' initialisation
    image_encoder = ImageEncoder()
    scenes = random_scenes(n_train, 2, generator=g)
    images = render_scenes(scenes, generator=g)
    params = list(image_encoder.parameters()) + list(text_encoder.parameters())
    optimiser = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        batch = torch.randint(n_train, (batch_size,), generator=g)
        first = torch.randint(2, (batch_size,), generator=g)
        text = text_encoder(caption_tokens(scenes[batch], first))
        negatives = text_encoder(caption_tokens(swap_colours(scenes[batch]), first)) if hard_negatives else None
        loss = contrastive_loss(image_encoder(images[batch]), text, temperature, negatives)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return image_encoder.eval(), text_encoder.eval(), losses


@torch.no_grad()
def mini_clip_swap_accuracy(image_encoder: nn.Module, text_encoder: nn.Module, n_scenes: int = 2000,
                            seed: int = 1) -> float:
    """The swapped-caption test on fresh images: true caption vs colours-swapped caption."""
    g = torch.Generator().manual_seed(seed)
    scenes = random_scenes(n_scenes, 2, generator=g)
    first = torch.randint(2, (n_scenes,), generator=g)
    images = image_encoder(render_scenes(scenes, generator=g))
    return swap_test_accuracy(images, text_encoder(caption_tokens(scenes, first)),
                              text_encoder(caption_tokens(swap_colours(scenes), first)))


# --------------------------------------------------------------------------- a real CLIP or SigLIP


def load_clip(path: str | Path):
    """``(model, tokenizer, image_processor)`` from a local CLIP or SigLIP directory.

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
    model = AutoModel.from_pretrained(path).eval()
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
                             do_rescale=False)["pixel_values"]
    image_emb = _features(model.get_image_features(pixel_values=pixels))

    # SigLIP was trained on captions padded to its full text length; CLIP pads to the longest
    siglip = "siglip" in type(model).__name__.lower()
    max_length = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)

    def embed(texts):
        batch = tokenizer(texts, padding="max_length" if siglip else True, max_length=max_length,
                          truncation=True, return_tensors="pt")
        return _features(model.get_text_features(**{k: v for k, v in batch.items()
                                                    if k in ("input_ids", "attention_mask")}))

    return swap_test_accuracy(image_emb, embed(true_captions), embed(swapped_captions))
