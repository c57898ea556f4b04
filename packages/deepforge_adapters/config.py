"""Backend configuration: schemas, validation, secret masking, and export as WebGME ``configStructure``.

A backend declares its fields once (:class:`Field`); that declaration drives validation (errors name the
backend and the field), the Execute dialog in WebGME (``to_config_structure``), environment-variable
fallbacks for secrets, and masking: a :class:`Config` never shows a secret in ``repr``/``str``, so logging one
is safe.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

MASK = "********"

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "float": (int, float),
    "boolean": (bool,),
    "dict": (dict,),
}


def env_var_name(backend: str, name: str) -> str:
    """``DEEPFORGE_S3_SECRET_ACCESS_KEY`` for backend ``s3`` field ``secretAccessKey``."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).upper()
    return f"DEEPFORGE_{re.sub(r'[^A-Za-z0-9]', '_', backend).upper()}_{snake}"


@dataclass(frozen=True)
class Field:
    """One config field; ``is_auth`` marks a secret (WebGME's ``isAuth``)."""

    name: str
    display_name: str = ""
    description: str = ""
    value_type: str = "string"
    default: Any = None
    required: bool = False
    is_auth: bool = False
    #: Extra environment variables consulted (in order) when the field is absent, after the generic
    #: ``DEEPFORGE_<BACKEND>_<FIELD>`` one.  Only consulted by :meth:`ConfigSchema.resolve`.
    env: tuple[str, ...] = ()
    choices: tuple[Any, ...] = ()
    #: Values a dialog offers (its ``valueItems``) without restricting the field to them, e.g. SciServer's
    #: compute domains; ``choices`` both offers and enforces.
    suggestions: tuple[Any, ...] = ()
    minimum: float | None = None
    read_only: bool = False
    #: The value decides where the backend's secrets are sent (an endpoint, host, login or service URL):
    #: sealed secrets are bound to it (:mod:`deepforge_adapters.secrets`), so they do not open once it changes.
    binds_secrets: bool = False

    def __post_init__(self) -> None:
        if self.value_type not in _TYPES:
            raise ValueError(f"field {self.name}: unknown value_type {self.value_type!r}")

    def to_config_structure(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "name": self.name,
            "displayName": self.display_name or self.name,
            "description": self.description,
            "value": self.default if self.default is not None else _EMPTY[self.value_type],
            "valueType": self.value_type,
            "readOnly": self.read_only,
        }
        if self.is_auth:
            item["isAuth"] = True
        if self.required:
            item["required"] = True
        if self.choices or self.suggestions:
            item["valueItems"] = list(self.choices or self.suggestions)
        if self.minimum is not None:
            item["minValue"] = self.minimum
        return item


_EMPTY: dict[str, Any] = {"string": "", "integer": 0, "float": 0.0, "boolean": False, "dict": {}}


class Config(Mapping[str, Any]):
    """A validated, read-only config whose secrets are masked in ``repr`` and ``str``."""

    def __init__(self, backend: str, values: Mapping[str, Any], secret_names: frozenset[str]) -> None:
        self.backend = backend
        self._values = dict(values)
        self._secret_names = secret_names

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def secret_names(self) -> frozenset[str]:
        return self._secret_names

    def secret_values(self) -> list[str]:
        """The secret values present (for log redaction)."""
        return [str(v) for k, v in self._values.items() if k in self._secret_names and v]

    def masked(self) -> dict[str, Any]:
        return {k: (MASK if k in self._secret_names and v else v) for k, v in self._values.items()}

    def public(self) -> dict[str, Any]:
        """The non-secret part: what may be stored in a model or a bundle in plain text."""
        return {k: v for k, v in self._values.items() if k not in self._secret_names}

    def secrets(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k in self._secret_names and v not in (None, "")}

    def to_dict(self) -> dict[str, Any]:
        """The plain values, secrets included: only for handing to a transport, never for printing."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Config({self.backend!r}, {self.masked()!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class ConfigSchema:
    """The fields of one backend."""

    backend: str
    fields: tuple[Field, ...] = field(default_factory=tuple)

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def secret_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.is_auth)

    def binding_names(self) -> tuple[str, ...]:
        """The fields that decide where the secrets go (``binds_secrets``), in declaration order."""
        return tuple(f.name for f in self.fields if f.binds_secrets)

    def to_config_structure(self) -> list[dict[str, Any]]:
        """WebGME plugin ``configStructure`` entries (the Execute dialog's per-backend form)."""
        return [f.to_config_structure() for f in self.fields]

    def to_json(self) -> list[dict[str, Any]]:
        return self.to_config_structure()

    def resolve(self, config: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> Config:
        """Validate ``config`` and fill what is absent from the environment, then from defaults."""
        environ = os.environ if environ is None else environ
        given = dict(config or {})
        for f in self.fields:
            if given.get(f.name) in (None, ""):
                for var in (env_var_name(self.backend, f.name), *f.env):
                    if environ.get(var):
                        given[f.name] = _coerce(self.backend, f, environ[var], source=var)
                        break
        return self.validate(given)

    def validate(self, config: Mapping[str, Any] | None) -> Config:
        """Check types, requiredness and choices; apply defaults.  Unknown keys are an error."""
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(self.backend, None, f"expected an object, got {type(config).__name__}")
        given = dict(config or {})
        known = {f.name for f in self.fields}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(
                self.backend,
                unknown[0],
                f"unknown field; expected one of: {', '.join(sorted(known)) or '(no fields)'}",
            )
        values: dict[str, Any] = {}
        for f in self.fields:
            value: Any = given.get(f.name)
            if value in (None, ""):
                if f.required and f.default in (None, ""):
                    raise ConfigError(self.backend, f.name, "is required")
                values[f.name] = f.default
                continue
            if isinstance(value, str) and f.value_type != "string":
                value = _coerce(self.backend, f, value, source="config")
            if not isinstance(value, _TYPES[f.value_type]) or (
                f.value_type in ("integer", "float") and isinstance(value, bool)
            ):
                shown = MASK if f.is_auth else repr(value)
                raise ConfigError(self.backend, f.name, f"expected {f.value_type}, got {type(value).__name__} {shown}")
            if f.choices and value not in f.choices:
                raise ConfigError(
                    self.backend, f.name, f"must be one of {', '.join(map(str, f.choices))}; got {value!r}"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(self.backend, f.name, f"must be a finite number; got {value!r}")
            if f.minimum is not None and isinstance(value, int | float) and value < f.minimum:
                raise ConfigError(self.backend, f.name, f"must be >= {f.minimum}; got {value!r}")
            values[f.name] = value
        return Config(self.backend, values, self.secret_names())


def seconds_from_env(environ: Mapping[str, str], name: str, default: float) -> float:
    """A duration from environment variable ``name``: a finite number >= 0 (``default`` when unset or empty).

    Raises :class:`ConfigError` naming the variable otherwise (``nan``, ``inf``, ``-1``, ``soon``): a grace
    period of ``nan`` would never end, a negative one would end before it began.
    """
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError("environment", name, f"{raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError("environment", name, f"must be a finite number of seconds >= 0; got {raw!r}")
    return value


def _coerce(backend: str, f: Field, raw: str, source: str) -> Any:
    """Parse a string (from an environment variable or a CLI flag) into the field's type."""
    try:
        if f.value_type == "integer":
            return int(raw)
        if f.value_type == "float":
            return float(raw)
        if f.value_type == "boolean":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        shown = MASK if f.is_auth else repr(raw)
        raise ConfigError(backend, f.name, f"cannot parse {shown} from {source} as {f.value_type}") from None
    return raw
