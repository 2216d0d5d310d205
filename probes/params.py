"""Declared probe parameters: one coercion and check path for every probe.

Each :class:`~probes.registry.ProbeSpec` lists its parameters as :class:`Param`
declarations (name, kind, range or choices, default, one-line help). The same
declarations drive the check that ``scan.prepare`` runs before anything is
written, the values a probe reads (``ctx.params``), the record kept with each
run, ``workbench probes`` and the docs. A wrong type, NaN or an out-of-range
value is a one-line :class:`ProbeError` naming the probe and the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.errors import ProbeError

KINDS = ("int", "float", "bool", "str", "choice", "list", "path", "json")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Param:
    """One parameter of a probe.

    ``kind`` is one of :data:`KINDS`: ``choice`` takes one of ``choices``; ``list``
    a list (or comma-separated string) whose items are among ``choices`` when
    given; ``path`` an existing file or folder; ``json`` any JSON value.
    ``lo``/``hi`` bound numbers (inclusive). ``nullable`` allows ``None``
    (``null`` on the command line) and is implied by a ``None`` default.
    """

    name: str
    default: Any
    help: str
    kind: str = "float"
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    check: Callable[[Any], None] | None = field(default=None, compare=False, repr=False)
    """A further check of the coerced value (raises ProbeError), so a value the probe would refuse is refused
    with the other parameters, before anything is written."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"param {self.name}: unknown kind {self.kind!r}")

    @property
    def allows_none(self) -> bool:
        return self.nullable or self.default is None

    def coerce(self, value: Any, probe: str) -> Any:
        """``value`` as this parameter's type, checked; ProbeError (one line) otherwise."""
        where = f"{probe}: param {self.name}"
        if value is None:
            if self.allows_none:
                return None
            raise ProbeError(f"{where} may not be null")
        if self.kind in ("int", "float"):
            out = self._number(value, where)
        else:
            out = getattr(self, f"_{self.kind}")(value, where)
        if self.check is not None:
            try:
                self.check(out)
            except ProbeError as exc:
                raise ProbeError(f"{probe}: {exc}") from None
        return out

    def _bool(self, value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ProbeError(f"{where} must be true or false, got {value!r}")

    def _str(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise ProbeError(f"{where} must be text, got {value!r}")
        return value

    def _choice(self, value: Any, where: str) -> Any:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in self.choices:
            raise ProbeError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return text

    def _list(self, value: Any, where: str) -> list[Any]:
        items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ProbeError(f"{where} must be a list (or comma-separated text), got {value!r}")
        items = list(items)
        if self.choices:
            bad = [v for v in items if v not in self.choices]
            if bad:
                raise ProbeError(f"{where}: {', '.join(map(repr, bad))} not among {', '.join(map(str, self.choices))}")
            if not items:
                raise ProbeError(f"{where} needs at least one of {', '.join(map(str, self.choices))}")
        return items

    def _path(self, value: Any, where: str) -> str:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ProbeError(f"{where} must be a file or folder path, got {value!r}")
        p = Path(value).expanduser()
        if not p.exists():
            raise ProbeError(f"{where}: no such file or folder: {p}")
        return str(p)

    def _json(self, value: Any, where: str) -> Any:
        return value  # anything JSON can carry; the probe reads it

    def _number(self, value: Any, where: str) -> int | float:
        integer = self.kind == "int"
        if isinstance(value, bool):
            raise ProbeError(f"{where} must be a number, got {value!r}")
        try:
            if integer and isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                out: int | float = int(value)
            elif integer and isinstance(value, str):
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                out = int(f)
            else:
                out = int(value) if integer else float(value)
        except (TypeError, ValueError, OverflowError):
            raise ProbeError(f"{where} must be a{'n integer' if integer else ' number'}, got {value!r}") from None
        if isinstance(out, float) and not math.isfinite(out):
            raise ProbeError(f"{where} must be finite, got {value!r}")
        if (self.lo is not None and out < self.lo) or (self.hi is not None and out > self.hi):
            raise ProbeError(f"{where}={value!r} is out of range {self.range_text()}")
        return out

    def range_text(self) -> str:
        def fmt(v: float | None, inf: str) -> str:
            if v is None:
                return inf
            return f"{int(v):,}" if self.kind == "int" else f"{v:g}"

        return f"[{fmt(self.lo, '-inf')}, {fmt(self.hi, 'inf')}]"

    def type_text(self) -> str:
        """A short human description of what the parameter takes (for ``workbench probes`` and the docs)."""
        if self.kind in ("int", "float"):
            text = f"{self.kind} {self.range_text()}" if self.lo is not None or self.hi is not None else self.kind
        elif self.kind == "choice":
            text = " | ".join(map(str, self.choices))
        elif self.kind == "list":
            text = "list of " + (" | ".join(map(str, self.choices)) if self.choices else "text")
        else:
            text = self.kind
        return text + (" or null" if self.allows_none and self.kind not in ("json",) else "")


SEED = Param("seed", 0, "seed of every random choice the probe makes (results are deterministic for a seed)",
             "int", 0, 2**31 - 1)


def resolve(declared: Sequence[Param], given: Mapping[str, Any] | None, *, probe: str) -> dict[str, Any]:
    """Defaults filled in and every given value checked; a key the probe does not declare is an error."""
    by_name = {p.name: p for p in declared}
    given = dict(given or {})
    unknown = sorted(k for k in given if k not in by_name)
    if unknown:
        raise ProbeError(f"{probe} takes no parameter {unknown[0]!r}; it takes: {', '.join(by_name) or 'none'}")
    return {p.name: p.coerce(given[p.name], probe) if p.name in given else _copy(p.default) for p in declared}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else dict(value) if isinstance(value, dict) else value


def split_for_probes(given: Mapping[str, Any], probes: Iterable[tuple[str, Sequence[Param]]]) -> dict[str, dict]:
    """Share the examiner's ``--param`` values out among the selected probes.

    ``name=value`` goes to every selected probe that declares ``name``; ``probe.name=value`` only to that
    probe. A key that no selected probe takes is a ProbeError, so a typo never passes silently.
    """
    probes = list(probes)
    out: dict[str, dict[str, Any]] = {name: {} for name, _ in probes}
    declared = {name: {p.name for p in params} for name, params in probes}
    for key, value in given.items():
        probe, _, name = key.rpartition(".")
        if probe:
            if probe not in declared:
                raise ProbeError(f"--param {key}: {probe} is not among the probes of this scan "
                                 f"({', '.join(declared) or 'none'})")
            if name not in declared[probe]:
                raise ProbeError(f"{probe} takes no parameter {name!r}; it takes: {', '.join(sorted(declared[probe]))}")
            out[probe][name] = value
            continue
        takers = [p for p, names in declared.items() if key in names]
        if not takers:
            raise ProbeError(f"no probe of this scan ({', '.join(declared) or 'none'}) takes a parameter {key!r}; "
                             "`workbench probes` lists each probe's parameters")
        for p in takers:
            out[p].setdefault(key, value)
    return out
