"""The ``MISS`` sentinel: a miss is not ``None``, so a cached ``None`` is a hit."""

from __future__ import annotations

from typing import Final, final

__all__ = ["MISS", "Sentinel"]


@final
class Sentinel:
    """A named singleton that prints readably and survives pickling as itself."""

    _registry: dict[str, Sentinel] = {}  # noqa: RUF012 - class-level registry on purpose
    __slots__ = ("name",)

    def __new__(cls, name: str) -> Sentinel:
        existing = cls._registry.get(name)
        if existing is not None:
            return existing
        obj = super().__new__(cls)
        obj.name = name
        cls._registry[name] = obj
        return obj

    def __repr__(self) -> str:
        return self.name

    def __bool__(self) -> bool:
        # A miss is falsy so ``if value:`` reads naturally, but always test ``is MISS``.
        return False

    def __reduce__(self) -> tuple[type[Sentinel], tuple[str]]:
        return (Sentinel, (self.name,))


MISS: Final = Sentinel("MISS")
