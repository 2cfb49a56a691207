"""Hidden states of a transformer, token by token, via forward hooks; and a disk cache.

``token_activations(texts, layers)`` runs MiniLM (or any model from ``load_model``) over
``texts`` in batches, with a progress bar, and returns every real (non-padding) token's
residual stream at the chosen layers. Layer 0 is the embedding output; layer L is the
output of transformer block L. The forward pass stops after the last layer asked for.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where computed activations are kept: ``$COURSE_CACHE``, or ``.cache/`` in the repo."""
    path = Path(os.environ.get("COURSE_CACHE", ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached(name: str, compute: Callable[[], object], key: object = None):
    """``compute()``, saved under ``cache_dir()/name-<hash of key>.pt`` and reloaded next time."""
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:10]
    path = cache_dir() / f"{name}-{digest}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    value = compute()
    torch.save(value, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # never leave a half-written cache behind
    return value


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a BERT, LLaMA, GPT-2 or CLIP text model."""
    for path in ("encoder.layer", "layers", "h", "model.layers", "transformer.h",
                 "text_model.encoder.layers", "encoder.layers"):
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"cannot find the transformer blocks of a {type(model).__name__}")


class _StopForward(Exception):
    """Raised by a hook once every layer asked for has been seen."""


@dataclass
class TokenActivations:
    """Residual-stream vectors of every real token of a list of texts.

    ``acts [tokens, layers, d]``; ``text_index``, ``position`` and ``token_ids`` say, for
    each row, which text it comes from, where in it, and which token it is.
    """

    acts: Float[Tensor, "tokens layers d"]
    text_index: Int[Tensor, "tokens"]
    position: Int[Tensor, "tokens"]
    token_ids: Int[Tensor, "tokens"]
    layers: tuple[int, ...]

    def at(self, position: int | str) -> Float[Tensor, "texts layers d"]:
        """One row per text: the token at ``position`` (``"last"`` is the last real token)."""
        if position == "last":
            last = torch.zeros(int(self.text_index.max()) + 1, dtype=torch.long)
            last.scatter_reduce_(0, self.text_index, torch.arange(len(self.position)), "amax")
            return self.acts[last]
        rows = self.position == position
        if rows.sum() != int(self.text_index.max()) + 1:
            raise ValueError(f"not every text has a token at position {position}")
        return self.acts[rows]


@torch.no_grad()
def token_activations(texts: Sequence[str], layers: Sequence[int], model=None, tokenizer=None,
                      batch_size: int = 64, max_length: int = 128, progress: bool = True
                      ) -> TokenActivations:
    """Hidden states at ``layers`` for every non-padding token of ``texts``, on the CPU.

    ``model``/``tokenizer`` default to all-MiniLM-L6-v2. Texts longer than ``max_length``
    tokens are truncated.
    """
    if model is None or tokenizer is None:
        from utils.artifacts import load_model

        model, tokenizer = load_model()
    blocks = transformer_blocks(model)
    layers = tuple(layers)
    if not layers or min(layers) < 0 or max(layers) > len(blocks):
        raise ValueError(f"layers must be between 0 (embeddings) and {len(blocks)}, got {layers}")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")

    captured: dict[int, Tensor] = {}

    def hook_for(layer: int):
        def hook(module, inputs, output):
            captured[layer] = (output[0] if isinstance(output, tuple) else output).float().cpu()
            if len(captured) == len(layers):
                raise _StopForward
        return hook

    # the input of block 0 is the embedding output; block L's output is layer L + 1
    handles = [blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: hook_for(0)(module, None, args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True)] if 0 in layers else []
    handles += [blocks[layer - 1].register_forward_hook(hook_for(layer)) for layer in layers if layer > 0]
    device = next(model.parameters()).device
    acts, text_index, position, token_ids = [], [], [], []
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="activations", disable=not progress):
            batch = tokenizer(list(texts[start: start + batch_size]), return_tensors="pt", padding=True,
                              truncation=True, max_length=max_length).to(device)
            captured.clear()
            try:
                model(**batch)
            except _StopForward:
                pass
            mask = batch["attention_mask"].bool().cpu()
            acts.append(torch.stack([captured[layer] for layer in layers], dim=2)[mask])
            rows, cols = mask.nonzero(as_tuple=True)
            text_index.append(rows + start)
            position.append(cols)
            token_ids.append(batch["input_ids"].cpu()[mask])
    finally:
        for handle in handles:
            handle.remove()
    return TokenActivations(torch.cat(acts), torch.cat(text_index), torch.cat(position),
                            torch.cat(token_ids), layers)
