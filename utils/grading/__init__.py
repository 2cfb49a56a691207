"""The grader: a class's notebooks, graded against the hidden checks in a sandbox.

Modules, in the order a submission meets them:

* ``cli``: ``python -m utils.grade`` (collecting submissions, shards, the canary, merging).
* ``submission``: the definitions a notebook holds (nothing else of it runs).
* ``runner``: one submission: its definitions in a worker, its check cases here, one
  verdict per case, within the time budget.
* ``sandbox``, ``worker``, ``isolation``, ``limits``: the student's process, who it runs
  as, what it may see and touch, and how much of the machine it may use.
* ``remote``, ``wire``: how the check cases in the grader reach the student's objects.
* ``reports``: the JSON report, gradebook, JUnit and Gradescope files.

What a check case may do
------------------------

A case (``@suite.case``, ``utils.checks``) is ``program(impl, seed) -> plain data``. It
runs in the grader's process; ``impl`` is the student's namespace in another process
(the reference's, for expected values, runs behind the same proxies in one process, so
whatever works for one works for the other). So a case:

* calls the student's functions and classes, reads and sets attributes of what they
  return, iterates over them, indexes them. Arguments cross as copies: tensors, arrays,
  numbers, strings, lists, tuples, dicts with string keys, ``torch.Generator`` (its state),
  dtypes, and ``pathlib.Path`` (the file it names is copied for the student's code to read).
  A callable or a module of the case's own (an ``lr_schedule`` lambda, a block a hook is
  registered on) is passed by reference: the student's code calls it back here.
* gets plain results back as copies; anything else (a model, a hook function) as a
  proxy that forwards what is done to it.
* may change a student's tensor in place through the tensor itself: ``model.W.copy_(x)``,
  ``sae.b_enc -= 0.8``, ``getattr(sae, name).mul_(2)`` run in the student's process (use
  tensor methods, not ``torch.nn.init`` functions, for that). A tensor read from a student's
  object is kept up to date whenever it is used.
* computes gradients through the student's code with ``utils.checks.gradients`` (it runs
  in the student's process); ``backward()`` or ``torch.autograd.grad`` on what came back,
  or a tensor that requires grad passed in, raise ``CaseError``.
* draws its inputs from explicit generators. The student's code starts each case with the
  global random state seeded with the case's seed, but it is its own state, not the case's.
* expects arguments to stay as they were: a call that changes an argument in place is
  copied back (the case sees what it would see in one process) and fails the case, unless
  the case says ``changes_arguments=True`` (a forward hook may change its output).
* does not rely on object identity across the boundary, or on ``isinstance`` of what the
  student's code returned beyond plain data.

New public helpers that must run where the student's objects live (``vmap`` over a
student's method, say) are written like ``gradients``: a function in ``utils`` decorated
with ``remote.in_student_process``.
"""
