"""Typed parameter models for stages, sources and the core tables.

A parameter model is declared like a dataclass, one :func:`param` per field::

    class PointcloudParams(Params):
        peak_threshold: float = param(40.0, "smallest peak amplitude kept (ADC)", gt=0)
        max_peaks: int = param(5, "traces with more peaks are dropped", ge=1)

:meth:`Params.from_mapping` converts a TOML table into an instance and reports
*every* problem at once as :class:`Problem` (key path, message), so that the
pipeline loader can point at ``file.toml:LINE``. The models are also what
``conduit stages`` and the generated pipeline reference print, so the docs
cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

__all__ = ["Params", "ParamSpec", "Problem", "ParamError", "param", "coerce", "describe_type", "did_you_mean",
           "unknown_key_message"]

KeyPath = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One configuration problem: where (key path) and what."""

    path: KeyPath
    message: str

    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path)


class ParamError(ValueError):
    """Raised with every :class:`Problem` found while converting a table."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.dotted()}: {p.message}" for p in problems))


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """What ``conduit stages`` shows for one parameter."""

    name: str
    type: Any
    default: Any
    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def type_name(self) -> str:
        return describe_type(self.type)

    def range_text(self) -> str:
        parts = []
        for op, bound in (("≥", self.ge), (">", self.gt), ("≤", self.le), ("<", self.lt)):
            if bound is not None:
                parts.append(f"{op} {bound:g}")
        return ", ".join(parts)


_META_KEY = "conduit"


def param(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """Declare one parameter: its default, a one-line doc (with units) and bounds.

    Mutable defaults (lists, dicts) are copied per instance.
    """
    meta = {_META_KEY: {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: _deepcopy(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _deepcopy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


class Params:
    """Base class of every parameter model (a frozen, keyword-only dataclass)."""

    __conduit_specs__: ClassVar[tuple[ParamSpec, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        hints = typing.get_type_hints(cls)
        specs = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            meta = f.metadata.get(_META_KEY, {})
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = dataclasses.MISSING
            specs.append(
                ParamSpec(
                    name=f.name,
                    type=hints[f.name],
                    default=default,
                    doc=meta.get("doc", ""),
                    ge=meta.get("ge"),
                    gt=meta.get("gt"),
                    le=meta.get("le"),
                    lt=meta.get("lt"),
                )
            )
        cls.__conduit_specs__ = tuple(specs)

    @classmethod
    def specs(cls) -> tuple[ParamSpec, ...]:
        """The declared parameters, in declaration order."""
        return cls.__conduit_specs__

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, path: KeyPath = (), ignore: frozenset[str] = frozenset()):
        """Build an instance from a TOML table; raise :class:`ParamError` listing every problem.

        ``ignore`` names keys that belong to the caller (``use``, ``kind``).
        """
        problems: list[Problem] = []
        values: dict[str, Any] = {}
        specs = {s.name: s for s in cls.specs()}
        for key, value in raw.items():
            if key in ignore:
                continue
            spec = specs.get(key)
            if spec is None:
                problems.append(Problem(path + (key,), unknown_key_message(key, specs)))
                continue
            try:
                converted = coerce(value, spec.type, path + (key,))
                _check_bounds(spec, converted)
            except ParamError as err:
                problems.extend(err.problems)
                continue
            except ValueError as err:
                problems.append(Problem(path + (key,), str(err)))
                continue
            values[key] = converted
        for spec in specs.values():
            if spec.required and spec.name not in raw:
                problems.append(Problem(path + (spec.name,), f"missing required parameter '{spec.name}'"))
        if problems:
            raise ParamError(problems)
        try:
            instance = cls(**values)
            extra = instance.check()
        except ParamError as err:
            extra = err.problems
        except ValueError as err:  # raised rather than returned: a problem of the whole table
            extra = [Problem((), str(err))]
        if extra:
            raise ParamError([Problem(path + tuple(p.path), p.message) for p in extra])
        return instance

    def check(self) -> list[Problem]:
        """Cross-field checks; override to return problems with paths relative to this table.

        Raising ``ValueError("...")`` instead is fine: its message becomes a problem of the whole table.
        """
        return []

    def to_dict(self) -> dict[str, Any]:
        """Plain values, nested models as dicts, paths as strings (TOML/JSON-able)."""
        return {s.name: _plain(getattr(self, s.name)) for s in self.specs()}

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def did_you_mean(word: object, choices: Iterable[object], *, n: int = 1, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` (or ``'x' or 'y'`` with ``n`` = 2) for the choices closest to ``word``; '' when none is close.

    The one place every "unknown name" message (keys, stages, sources,
    commands, quantities, gates, nuclides ...) gets its hint from.
    """
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def unknown_key_message(key: str, known: Mapping[str, Any] | list[str]) -> str:
    names = list(known)
    hint = did_you_mean(key, names)
    options = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + ", ..."
    return f"unknown key '{key}'{hint}; known keys: {options}" if names else f"unknown key '{key}'"


def _plain(value: Any) -> Any:
    if isinstance(value, Params):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_bounds(spec: ParamSpec, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if spec.ge is not None and not value >= spec.ge:
        raise ValueError(f"must be ≥ {spec.ge:g}, got {value!r}")
    if spec.gt is not None and not value > spec.gt:
        raise ValueError(f"must be > {spec.gt:g}, got {value!r}")
    if spec.le is not None and not value <= spec.le:
        raise ValueError(f"must be ≤ {spec.le:g}, got {value!r}")
    if spec.lt is not None and not value < spec.lt:
        raise ValueError(f"must be < {spec.lt:g}, got {value!r}")


def _got(value: Any) -> str:
    return f"got {value!r} ({type(value).__name__})"


def coerce(value: Any, tp: Any, path: KeyPath = ()) -> Any:
    """Convert a TOML value to ``tp``; raise ValueError/ParamError with a readable message."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors: list[ValueError] = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, path)
            except (ValueError, ParamError) as err:
                errors.append(err)
        # The precise reason when it is clear which option was meant: the only one (a 3-element list
        # for a `tuple[float, float] | None` says "expected 2 values"), or a table / list whose
        # contents failed (its problems keep their own key paths).
        nested = [err for err in errors if isinstance(err, ParamError)]
        if len(errors) == 1 or nested:
            raise (nested or errors)[0]
        raise ValueError(f"expected {describe_type(tp)}, {_got(value)}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        hint = did_you_mean(value, choices)
        raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}{hint}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, {_got(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"expected an integer, {_got(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"expected a number, {_got(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, {_got(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise ValueError(f"expected a path (string), {_got(value)}")
    if isinstance(tp, type) and issubclass(tp, Params):
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a table, {_got(value)}")
        return tp.from_mapping(value, path=path)
    if origin in (list, tuple):
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, {_got(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values, got {len(value)}")
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        out, problems = [], []
        for i, (item, item_tp) in enumerate(zip(value, item_types)):
            try:
                out.append(coerce(item, item_tp, path + (i,)))
            except ParamError as err:
                problems.extend(err.problems)
            except ValueError as err:
                problems.append(Problem(path + (i,), str(err)))
        if problems:
            raise ParamError(problems)
        return tuple(out) if origin is tuple else out
    if origin is dict:
        key_tp, val_tp = get_args(tp) or (str, Any)
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a table, {_got(value)}")
        return {k: coerce(v, val_tp, path + (k,)) for k, v in value.items()}
    raise TypeError(f"unsupported parameter type {tp!r}")


def describe_type(tp: Any) -> str:
    """Short human name of a parameter type (``float``, ``list[float]``, ``'skip' | 'wait'``)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_type(a) for a in get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple, dict):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"{origin.__name__}[{', '.join(describe_type(a) for a in args)}]"
    if tp is type(None):
        return "none"
    if isinstance(tp, type) and issubclass(tp, Params):
        return f"table ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))
