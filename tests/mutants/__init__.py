"""Wrong implementations that the hidden checks must catch, one module per chapter.

Each module defines ``mutants = Registry()`` and registers, per exercise, functions with
a plausible mistake (``@mutant``) and correct ones written differently from the
reference (``@alternative``). ``tests/test_mutants.py`` asserts that every mutant fails
at least one check of its exercise and every alternative passes them all.
"""

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Variant:
    exercise: str
    description: str
    implementation: Callable
    correct: bool


@dataclass
class Registry:
    variants: list[Variant] = field(default_factory=list)

    def mutant(self, exercise: str, description: str):
        return self._register(exercise, description, correct=False)

    def alternative(self, exercise: str, description: str):
        return self._register(exercise, description, correct=True)

    def _register(self, exercise, description, correct):
        def register(implementation):
            self.variants.append(Variant(exercise, description, implementation, correct))
            return implementation
        return register
