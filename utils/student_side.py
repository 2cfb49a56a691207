"""Steps of a check that must run where the student's code runs.

A check case runs in the grader's process and reaches the student's functions and objects
through handles (``utils.grading.remote``). Autograd, ``torch.vmap`` and forward hooks
cannot work through a handle: they need the student's tensors and modules themselves. Each
helper below is one such step, marked ``@in_student_process``: called with a handle among
its arguments it runs in the student's process and returns plain data (tensors, tuples,
lists). The code here is public; which inputs a check builds and how it judges stay in
``tests/``. ``utils.checks.gradients`` is the general "gradients of a sum of powers" helper;
these are the ones particular to a chapter.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from utils.grading.remote import in_student_process

# --------------------------------------------------------------------------- chapter 2: hooks


class TupleBlock(nn.Module):
    """A seeded stand-in for a transformer block that returns ``(hidden_states, extra)``."""

    def __init__(self, d: int, seed: int):
        super().__init__()
        self.linear = nn.Linear(d, d)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(d, d, generator=g))
            self.linear.bias.copy_(torch.randn(d, generator=g))

    def forward(self, x):
        return self.linear(x), x.sum(-1)


@in_student_process
def hooked_forward(hook, x: torch.Tensor, seed: int, tuple_output: bool):
    """The output of a seeded block (``TupleBlock``, or just its linear layer) on ``x [..., d]``
    with ``hook`` registered as a forward hook; the hook is removed afterwards."""
    block = TupleBlock(x.shape[-1], seed)
    module = block if tuple_output else block.linear
    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return module(x)
    finally:
        handle.remove()


# --------------------------------------------------------------------------- chapter 4: SAEs


@in_student_process
def sae_forward_under_vmap(sae, x: torch.Tensor):
    """``sae.forward`` under ``torch.func.vmap`` over a stack of copies of its parameters, one
    per leading row of ``x [instances, batch, d_in]``, as ``train_saes`` runs it."""
    params = {name: p.detach().expand(len(x), *p.shape) for name, p in sae.named_parameters()}
    return vmap(lambda p, rows: functional_call(sae, p, (rows,)))(params, x)


def _apply_and_gradients(apply, pre, threshold, upstream):
    pre, threshold = pre.clone().requires_grad_(), threshold.clone().requires_grad_()
    out = apply(pre, threshold)
    grads = torch.autograd.grad(out, (pre, threshold), upstream, allow_unused=True)
    return (out.detach(), *(torch.zeros_like(t) if g is None else g for g, t in zip(grads, (pre, threshold))))


@in_student_process
def function_gradients(function, pre, threshold, bandwidth, upstream):
    """``function.apply(pre, threshold, bandwidth)`` and the gradients it sends to ``pre`` and
    ``threshold`` for the upstream gradient ``upstream`` (zeros where it sends none)."""
    return _apply_and_gradients(lambda p, t: function.apply(p, t, bandwidth), pre, threshold, upstream)


@in_student_process
def function_gradients_under_vmap(function, pre, threshold, bandwidth, upstream):
    """``function_gradients`` with ``function.apply`` vmapped over a leading instances dim of
    ``pre``, ``threshold`` and ``upstream``, as ``train_saes`` runs it."""
    return _apply_and_gradients(lambda p, t: vmap(function.apply, in_dims=(0, 0, None))(p, t, bandwidth),
                                pre, threshold, upstream)


class _Block(nn.Module):
    """A tiny transformer-block stand-in: h -> tanh(h A), returned bare or as (h, extra)."""

    def __init__(self, weight, as_tuple):
        super().__init__()
        self.weight, self.as_tuple = weight, as_tuple

    def forward(self, h):
        out = torch.tanh(h @ self.weight)
        return (out, out.sum(-1)) if self.as_tuple else out


@in_student_process
def hooked_block_outputs(replacing_hook, x, weights):
    """Run ``x`` through three blocks (once returning tensors, once tuples, the way BERT and
    GPT-2 blocks do), with ``replacing_hook(edit)`` on the middle block, ``edit(h) = 2h − 1``.
    Returns, for each kind, the final hidden states and what the middle block handed on."""
    results = []
    for as_tuple in (False, True):
        blocks = [_Block(w, as_tuple) for w in weights]
        handed_on = []
        blocks[1].register_forward_hook(replacing_hook(lambda h: 2 * h - 1))
        blocks[1].register_forward_hook(lambda module, inputs, output: handed_on.append(output))
        h = x
        for block in blocks:
            out = block(h)
            h = out[0] if as_tuple else out  # as transformers' encoders read a block's output
        middle = handed_on[0]
        results.append((h, list(middle) if isinstance(middle, tuple) else [middle], isinstance(middle, tuple)))
    return results


# --------------------------------------------------------------------------- chapter 5: binding


@in_student_process
def vmapped(function, *batched):
    """``torch.vmap(function)(*batched)``: the student's function over a leading batch
    dimension, as the chapter's given code calls it."""
    return torch.vmap(function)(*batched)


@in_student_process
def stacked_forward_under_vmap(saes, x: torch.Tensor):
    """``(x_hat, z)`` of several SAEs at once, their parameters stacked and the forward pass
    under ``torch.vmap``, as ``train_saes`` runs them."""
    params, buffers = stack_module_state(list(saes))
    skeleton = copy.deepcopy(saes[0]).to("meta")
    x_hat, z = vmap(lambda p, b: functional_call(skeleton, (p, b), (x,)))(params, buffers)
    return x_hat.detach(), z.detach()
