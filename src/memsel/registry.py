"""Named components that register themselves, each with its own config dataclass.

Selector families, memory-budget strategies, datasets, answer readers, Tune schedulers and Tune
search algorithms are each kept in one :class:`Registry`. A component registers its name and its
config dataclass beside its code, so adding one is one module (and its test) and the allowed names
exist once: configuration checks, error messages and the CLI ask the registry.

Two ways to register:

- ``@REGISTRY.register("name", NameConfig)`` on the component (a class or a factory);
- ``@REGISTRY.register_config("name", "package.module:attr")`` on a config dataclass whose
  component lives in a heavier module (one importing torch, say), resolved on first :meth:`get`.
  This keeps the config side importable without the component's dependencies.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or file that memsel refuses, with the field and what was expected."""


def check(cond: bool, name: str, expected: str, value: Any) -> None:
    """Refuse ``value`` of field ``name`` unless ``cond``: what every config dataclass's ``validate`` uses."""
    if not cond:
        raise ConfigError(f"field '{name}': expected {expected}, got {value!r}")


class UnknownNameError(ConfigError):
    """A name that no component of a registry has, with the names that are allowed."""


@dataclass
class Entry:
    """One registered component: the object (or a ``module:attr`` reference to it) and its config class."""

    component: Any
    config_cls: type | None


class Registry:
    """name -> component + its config dataclass, for one kind of component (``what``, e.g. "selector family")."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, config_cls: type | None = None) -> Callable[[T], T]:
        """Decorator registering a component under ``name`` with its config dataclass."""
        def deco(component: T) -> T:
            self._add(name, component, config_cls)
            return component
        return deco

    def register_config(self, name: str, component: str) -> Callable[[type], type]:
        """Decorator on a config dataclass; its component is ``package.module:attr``, imported on first use."""
        def deco(config_cls: type) -> type:
            self.register_reference(name, component, config_cls)
            return config_cls
        return deco

    def register_reference(self, name: str, component: str, config_cls: type | None = None) -> None:
        """Register ``package.module:attr`` (imported on first :meth:`get`) under ``name``, e.g. one without settings."""
        if ":" not in component:
            raise ValueError(f"{self.what} {name!r}: component reference {component!r} is not 'package.module:attr'")
        self._add(name, component, config_cls)

    def _add(self, name: str, component: Any, config_cls: type | None) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.what}: a registered name must be a non-empty string, got {name!r}")
        old = self._entries.get(name)
        if old is not None and not _same(old, component, config_cls):
            raise ValueError(f"{self.what} {name!r} is registered already (by {_where(old.component)})")
        self._entries[name] = Entry(component, config_cls)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy component clean up with this)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def expected(self) -> str:
        """``one of [...]``, for error messages."""
        return f"one of {list(self._entries)}"

    def check(self, name: Any, field: str) -> None:
        """Refuse ``name`` for config field ``field`` unless it is registered, listing the allowed names."""
        check(isinstance(name, str) and name in self._entries, field, self.expected(), name)

    def _entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.what} {name!r}: expected {self.expected()}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The component registered as ``name``; an unknown name raises :class:`UnknownNameError` listing the names."""
        entry = self._entry(name)
        if isinstance(entry.component, str):
            module, _, attr = entry.component.partition(":")
            entry.component = getattr(importlib.import_module(module), attr)
        return entry.component

    def config_cls(self, name: str) -> type | None:
        """The config dataclass registered with ``name`` (None for a component without settings)."""
        return self._entry(name).config_cls

    def build_config(self, name: str, section: Any, options: dict | None, p: str, options_field: str) -> Any:
        """The validated config of component ``name``, chosen in config section ``section`` (prefix ``p``).

        A config class with ``FLAT_PREFIX`` reads its fields from ``section``'s own fields named
        ``FLAT_PREFIX + field`` (keys the YAML spelled before the registry, e.g. env.sample_decay);
        ``options`` (the section's ``options_field`` mapping) sets any field of it."""
        cls = self.config_cls(name)
        options = dict(options or {})
        where = f"{p}.{options_field}"
        if cls is None:
            check(not options, where, f"empty: {self.what} {name!r} has no settings", options)
            return None
        known = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            check(key in known, f"{where}.{key}", f"a setting of {self.what} {name!r}, one of {known}", key)
        prefix = getattr(cls, "FLAT_PREFIX", None)
        flat = {} if prefix is None else {f: getattr(section, prefix + f) for f in known}
        config = cls(**{**flat, **options})
        if hasattr(config, "validate"):
            config.validate(p)
        return config

    def make(self, name: str, section: Any, options: dict | None, p: str, options_field: str, *args: Any) -> Any:
        """Call component ``name`` with its config (built as :meth:`build_config` does) and ``args``."""
        return self.get(name)(self.build_config(name, section, options, p, options_field), *args)

    def check_choice(self, name: Any, section: Any, options: dict | None, p: str, name_field: str,
                     options_field: str, others: bool = True) -> Any:
        """Refuse an unknown ``name`` (field ``p.name_field``) or bad settings; returns the chosen config.

        With ``others``, the settings of other components spelled as the section's own fields are
        checked too, whatever the choice (as before the registry)."""
        self.check(name, f"{p}.{name_field}")
        for other in self.names() if others else ():
            if other != name and hasattr(self.config_cls(other), "FLAT_PREFIX"):
                self.build_config(other, section, None, p, options_field)
        return self.build_config(name, section, options, p, options_field)


def import_plugins(modules: list[str] | tuple[str, ...], field: str = "plugins") -> None:
    """Import the modules a config names in ``plugins``, so that the components they register (a family, a
    budget strategy, a dataset, a reader, a scheduler, a search algorithm) can be chosen by name: a
    component of one's own is one module, with nothing in memsel edited. A module that will not import
    is refused, naming it."""
    for name in modules:
        check(isinstance(name, str) and bool(name), field, "a list of importable module names", name)
        try:
            importlib.import_module(name)
        except Exception as e:  # any import failure is the user's module: say which and why
            raise ConfigError(f"field '{field}': module {name!r} could not be imported: "
                              f"{type(e).__name__}: {e}") from None


def _same(old: Entry, component: Any, config_cls: type | None) -> bool:
    """Re-registering the same thing (a module imported twice, a lazy reference resolved) is harmless."""
    return old.config_cls is config_cls and (old.component is component or _where(old.component) == _where(component))


def _where(component: Any) -> str:
    if isinstance(component, str):
        return component
    return f"{getattr(component, '__module__', '?')}:{getattr(component, '__qualname__', repr(component))}"
