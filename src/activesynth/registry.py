"""Name -> object registries with "did you mean" answers for unknown names.

The CLI, benchmark configs and (later) the annotation service look datasets, strategies and models up
here, so that one misspelt name gets one helpful message everywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from activesynth.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return a ``" Did you mean 'x'?"`` suffix for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=1, cutoff=0.5)
    if not close:
        return ""
    original = next(c for c in choices if c.lower() == close[0])
    return f" Did you mean '{original}'?"


def check_option(value: str, choices: tuple[str, ...] | list[str], what: str) -> str:
    """Validate an option string MONAI-style: case-insensitive, with a helpful message.

    Args:
        value: the option given by the user.
        choices: allowed values.
        what: the option's name, used in the message (e.g. ``"--task"``).

    Returns:
        The matching choice, in its canonical spelling.

    Raises:
        ConfigError: if ``value`` is not one of ``choices``.
    """
    for c in choices:
        if c.lower() == str(value).lower():
            return c
    raise ConfigError(
        f"Unknown {what} {value!r}; choose one of {', '.join(map(repr, choices))}."
        + did_you_mean(str(value), list(choices))
    )


class Registry(Generic[T]):
    """A named collection with a ``register`` decorator and did-you-mean lookups.

    Example:
        >>> DATASETS: Registry[Callable] = Registry("dataset")
        >>> @DATASETS.register("toy")
        ... def load_toy(): ...
        >>> DATASETS.get("toy") is load_toy
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ConfigError(f"{self.kind} {name!r} is registered twice.")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"Unknown {self.kind} {name!r}; available: {', '.join(sorted(self._items))}."
                + did_you_mean(name, list(self._items))
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
