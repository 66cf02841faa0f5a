"""String-keyed registries of configurable components (activations, costs, ...).

A component class has a ``name`` (plus optional ``aliases``) and lists its
keyword hyper-parameters in ``hyperparameters``; :class:`Configurable` gives it
a JSON config, equality and a repr from those. A :class:`Registry` maps names
to classes and turns a name, class, instance or config into an instance, with
an error listing the valid names for an unknown one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["Configurable", "Registry", "UnknownNameError"]


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: the form a config has after a JSON round trip, so a
    config compares equal before and after saving whatever spelling a layer keeps."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class Configurable:
    """Mixin: config, equality and repr from the ``hyperparameters`` attributes."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    #: Names of the keyword arguments of ``__init__``, stored as attributes.
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    #: Hyper-parameters kept under another attribute name (``bias`` -> ``has_bias`` on a
    #: layer whose ``bias`` is torch's bias array).
    stored_as: ClassVar[dict[str, str]] = {}

    def hyperparameter(self, key: str) -> Any:
        """The value of hyper-parameter ``key`` (an ``__init__`` keyword)."""
        return getattr(self, self.stored_as.get(key, key))

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable description: ``{"name": ..., <hyper-parameters>}``."""
        config: dict[str, Any] = {"name": self.name}
        for key in self.hyperparameters:
            config[key] = _plain(self.hyperparameter(key))
        return config

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={self.hyperparameter(k)!r}" for k in self.hyperparameters)
        return f"{type(self).__name__}({params})"


T = TypeVar("T", bound=Configurable)


class UnknownNameError(KeyError, ValueError):
    """An unknown registry name: a ``KeyError`` for ``REGISTRY[name]`` and a ``ValueError``
    for ``get_*(name)`` (what the library raised before ``[]`` existed). The message
    lists the valid names."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


def canonical_name(name: str) -> str:
    """Case-insensitive, ``_`` and ``-`` interchangeable: ``"Leaky_ReLU"`` -> ``"leaky-relu"``."""
    return name.strip().lower().replace("_", "-")


class Registry(Generic[T]):
    """Name -> class map for one kind of component (``kind`` is used in errors)."""

    def __init__(self, kind: str, base: type[T]) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` available under its name and aliases."""
        for key in (cls.name, *cls.aliases):
            key = canonical_name(key)
            if key in self._classes and self._classes[key] is not cls:
                raise ValueError(f"{self.kind} name {key!r} is already registered")
            self._classes[key] = cls
        return cls

    def names(self) -> list[str]:
        """Canonical names (no aliases), sorted."""
        return sorted({cls.name for cls in self._classes.values()})

    def classes(self) -> list[type[T]]:
        """Registered classes, one each, sorted by name."""
        unique = {cls.name: cls for cls in self._classes.values()}
        return [unique[name] for name in sorted(unique)]

    def lookup(self, name: str) -> type[T]:
        """The class registered under ``name``; ``ValueError`` listing valid names."""
        if not isinstance(name, str):
            raise TypeError(
                f"{self.kind} name must be a string, got {type(name).__name__}; "
                f"valid names: {', '.join(self.names())}"
            )
        try:
            return self._classes[canonical_name(name)]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            ) from None

    def __getitem__(self, name: str) -> type[T]:
        """``REGISTRY["relu"]``: the class (not an instance), as :meth:`lookup`.

        An unknown name raises :class:`UnknownNameError`, which is both a ``KeyError``
        (the mapping protocol) and a ``ValueError``, listing the valid names.
        """
        return self.lookup(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_name(name) in self._classes

    def __iter__(self):
        """Canonical names, sorted (aliases are accepted by lookups but not listed)."""
        return iter(self.names())

    def __len__(self) -> int:
        """Number of registered classes (aliases not counted)."""
        return len(self.names())

    def keys(self) -> list[str]:
        return self.names()

    def items(self) -> list[tuple[str, type[T]]]:
        return [(cls.name, cls) for cls in self.classes()]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"

    def get(self, spec: str | T | type[T] | dict[str, Any]) -> T:
        """An instance from a name, class, instance or config dict.

        Raises
        ------
        ValueError
            Unknown name (the message lists the valid ones) or unknown hyper-parameter.
        TypeError
            ``spec`` is none of the accepted kinds.
        """
        if isinstance(spec, self.base):
            return spec
        if isinstance(spec, type) and issubclass(spec, self.base):
            return spec()
        if isinstance(spec, str):
            return self.lookup(spec)()
        if isinstance(spec, dict):
            params = dict(spec)
            name = params.pop("name", None)
            if not isinstance(name, str):
                raise ValueError(f"{self.kind} config {spec!r} has no 'name'")
            cls = self.lookup(name)
            unknown = set(params) - set(cls.hyperparameters)
            if unknown:
                raise ValueError(
                    f"{self.kind} {name!r} has no hyper-parameter(s) {sorted(unknown)}; "
                    f"valid: {list(cls.hyperparameters)}"
                )
            return cls(**params)
        raise TypeError(
            f"{self.kind} must be a name, a {self.base.__name__} class or instance, "
            f"or a config dict; got {type(spec).__name__}"
        )
