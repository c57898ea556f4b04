"""The operator policy: which storage and compute backends plugin users may choose, and with what config.

The WebGME plugins run on the server host, as the server's OS account, on behalf of whoever may run a plugin
(an anonymous guest, on a server without authentication).  A backend config typed into a dialog or stored on
a node therefore decides what the *server* reads, writes and starts: ``local`` compute runs user code on the
server host, ``local`` storage writes under any directory the server may write, a ``gme`` host receives the
user's WebGME token.  The policy is how the operator of a shared server says what users may decide.

It is a TOML file named by ``$DEEPFORGE_POLICY`` (see docs/security.md, "The operator policy file")::

    [storage]
    allow = ["gme", "s3", "local"]              # the backends plugin users may choose

    [storage.local]
    root = { fixed = "/srv/deepforge/storage" } # the operator's value; users may only repeat it

    [storage.s3]
    endpoint = { allowed = ["http://minio.internal:9000"] }
    bucketName = { allowed = ["team-a", "team-b"] }

    [compute]
    allow = ["gme", "local"]

    [compute.local]
    workDir = { under = ["/srv/deepforge/compute"] }   # any directory inside one of these

Without a policy file (:meth:`Policy.default`) every installed backend except ``local`` storage and ``local``
and ``slurm`` compute (which run commands on the server host with its account) is offered.  Whether or not
there is a file, fields the policy says nothing about keep these built-in rules (:data:`BUILTIN_RULES`): the
``gme`` ``host`` is the server's own URL, and the ``local`` ``root`` and ``workDir`` and the ``slurm``
``extraDirectives`` (extra ``#SBATCH`` lines), ``sharedDir`` and SSH key files come from the server (its
environment or default), never from a user.

A request outside the policy raises :class:`PolicyError`, whose message names the backend or field and the
policy file; the plugins check before they create anything.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import DeepForgeError

log = logging.getLogger(__name__)

#: The environment variable naming the policy file.
POLICY_ENV = "DEEPFORGE_POLICY"
KINDS = ("storage", "compute")
#: Backends never offered without a policy file: they act on the server host with the server's account.
HOST_BACKENDS = {"storage": frozenset({"local"}), "compute": frozenset({"local", "slurm"})}
#: Fields whose values are paths on the server host: relative paths in the policy file are relative to the
#: file's directory, and values are compared as resolved real paths.
PATH_FIELDS = frozenset(
    {
        ("storage", "local", "root"),
        ("compute", "local", "workDir"),
        ("storage", "s3", "caBundle"),
        ("compute", "slurm", "sharedDir"),
        ("compute", "slurm", "sshIdentityFile"),
        ("compute", "slurm", "sshKnownHosts"),
    }
)
#: Fields compared as URLs (scheme and host lower-cased, default port and trailing slash dropped).
URL_FIELDS = frozenset(
    {"endpoint", "host", "loginUrl", "fileServiceUrl", "racmUrl", "casJobsUrl", "keystoneUrl", "dashboardUrl"}
)


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: ``fixed`` value meaning "the URL of the WebGME server running the plugin".
SERVER_URL = _Marker("<this server's URL>")
#: ``fixed`` value meaning "what the server resolves (its environment, else the backend's default)".
SERVER_DEFAULT = _Marker("<the server's own setting>")


class PolicyError(DeepForgeError):
    """A request outside the operator policy, or a policy file that is not valid; names field and file."""


@dataclass(frozen=True)
class Rule:
    """What the operator decides about one config field: exactly one of ``fixed``, ``allowed``, ``under``."""

    kind: str
    backend: str
    field: str
    fixed: Any = None
    allowed: tuple[Any, ...] | None = None
    under: tuple[Path, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.backend}.{self.field}"

    def describe(self) -> str:
        if self.allowed is not None:
            return "one of " + ", ".join(repr(v) for v in self.allowed)
        if self.under is not None:
            return "a directory under " + ", ".join(str(p) for p in self.under)
        return f"fixed to {self.fixed!r}" if not isinstance(self.fixed, _Marker) else f"fixed to {self.fixed}"


#: Rules that hold unless the policy file gives one for the same field (see the module docstring).
BUILTIN_RULES: tuple[tuple[str, str, str, _Marker], ...] = (
    ("storage", "gme", "host", SERVER_URL),
    ("compute", "gme", "host", SERVER_URL),
    ("storage", "local", "root", SERVER_DEFAULT),
    ("compute", "local", "workDir", SERVER_DEFAULT),
    # extra #SBATCH lines reach past every resource field: only an operator's rule (or the server's own
    # environment, DEEPFORGE_SLURM_EXTRA_DIRECTIVES) sets them
    ("compute", "slurm", "extraDirectives", SERVER_DEFAULT),
    # paths on the server host: the server writes under sharedDir and hands the key files to ssh
    ("compute", "slurm", "sharedDir", SERVER_DEFAULT),
    ("compute", "slurm", "sshIdentityFile", SERVER_DEFAULT),
    ("compute", "slurm", "sshKnownHosts", SERVER_DEFAULT),
)


def _norm_url(value: str) -> str:
    parts = urlsplit(value.strip())
    scheme = (parts.scheme or "https").lower()
    try:
        port = parts.port
    except ValueError:
        return value.strip()
    host = (parts.hostname or "").lower()
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def _registry_ids(kind: str) -> list[str]:
    from . import compute, storage

    return list((storage.registry if kind == "storage" else compute.registry).ids())


def _schema_fields(kind: str, backend: str) -> dict[str, Any] | None:
    """``{field name: Field}`` of a backend, or None if it does not import here (rules are then unchecked)."""
    from . import compute, storage

    try:
        cls = (storage.registry if kind == "storage" else compute.registry).get_class(backend)
    except Exception:  # a broken or absent optional backend: the policy may still name it
        return None
    return {f.name: f for f in cls.schema.fields}


@dataclass(frozen=True)
class Policy:
    """The policy in force: allowed backends per kind and the rules on their fields.

    ``source`` names the file (or says there is none); every refusal quotes it so a user knows whom to ask.
    """

    source: str
    allow: Mapping[str, frozenset[str] | None]  # kind -> allowed ids; None: every installed one but local
    rules: Mapping[tuple[str, str, str], Rule] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def default(cls) -> Policy:
        """No policy file: every installed backend but ``local`` storage/compute, built-in rules only."""
        return cls(f"no policy file: ${POLICY_ENV} is not set", {k: None for k in KINDS}, _builtin({}))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Policy:
        """Parse and validate a policy file; :class:`PolicyError` names the file and the key at fault."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise PolicyError(f"policy file {path}: cannot read it: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy file {path}: not valid TOML: {exc}") from None
        return cls.from_mapping(doc, str(path), base=path.resolve().parent)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], source: str, base: Path | None = None) -> Policy:
        def bad(key: str, message: str) -> PolicyError:
            return PolicyError(f"policy file {source}: key {key!r}: {message}")

        unknown = sorted(set(doc) - set(KINDS))
        if unknown:
            raise bad(unknown[0], f"unknown key; expected {' or '.join(f'[{k}]' for k in KINDS)}")
        allow: dict[str, frozenset[str] | None] = {}
        rules: dict[tuple[str, str, str], Rule] = {}
        for kind in KINDS:
            section = doc.get(kind)
            if section is None:
                allow[kind] = None
                continue
            if not isinstance(section, Mapping):
                raise bad(kind, "must be a table")
            known = _registry_ids(kind)
            ids = section.get("allow")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise bad(f"{kind}.allow", 'must be a list of backend ids, e.g. allow = ["gme"]')
            for backend in ids:
                if backend not in known:
                    raise bad(f"{kind}.allow", f"unknown {kind} backend {backend!r}; known: {', '.join(known)}")
            allow[kind] = frozenset(ids)
            for backend, table in section.items():
                if backend == "allow":
                    continue
                key = f"{kind}.{backend}"
                if backend not in known:
                    raise bad(key, f"unknown {kind} backend; known: {', '.join(known)}")
                if backend not in ids:
                    raise bad(key, f"rules for a backend that {kind}.allow does not list")
                if not isinstance(table, Mapping):
                    raise bad(key, "must be a table of field rules")
                fields = _schema_fields(kind, backend)
                for name, spec in table.items():
                    rule = _parse_rule(kind, backend, name, spec, fields, base, bad)
                    rules[(kind, backend, name)] = rule
        return cls(source, allow, _builtin(rules))

    # ------------------------------------------------------------------------------------------- queries
    def allowed_backends(self, kind: str, available: Iterable[str]) -> list[str]:
        """The ``available`` backend ids a plugin user may choose, sorted."""
        return sorted(b for b in available if self.allows(kind, b))

    def allows(self, kind: str, backend: str) -> bool:
        ids = self.allow.get(kind)
        return backend not in HOST_BACKENDS[kind] if ids is None else backend in ids

    def rule(self, kind: str, backend: str, name: str) -> Rule | None:
        return self.rules.get((kind, backend, name))

    def field_rules(self, kind: str, backend: str) -> list[Rule]:
        return [r for (k, b, _), r in self.rules.items() if (k, b) == (kind, backend)]

    def check_backend(self, kind: str, backend: str) -> None:
        if not self.allows(kind, backend):
            ids = self.allow.get(kind)
            everything = "every installed one but " + " and ".join(sorted(HOST_BACKENDS[kind]))
            shown = everything if ids is None else (", ".join(sorted(ids)) or "none")
            raise PolicyError(
                f"{kind} backend {backend!r} is not allowed by the operator policy ({self.source}); "
                f"allowed {kind} backends: {shown}"
            )

    # ------------------------------------------------------------------------------------------- checks
    def apply(
        self, kind: str, backend: str, config: Mapping[str, Any], server_url: str | None = None
    ) -> dict[str, Any]:
        """``config`` (what a user gave) checked against the policy, with the operator's fixed values set.

        A user value for a fixed field must equal the operator's value; one for an ``allowed``/``under``
        field must be within it.  ``SERVER_DEFAULT`` fields are removed so the server resolves them.
        """
        self.check_backend(kind, backend)
        out = dict(config)
        for rule in self.field_rules(kind, backend):
            given = out.get(rule.field)
            if rule.fixed is not None:
                fixed = server_url if rule.fixed is SERVER_URL else rule.fixed
                if given not in (None, "") and (fixed is None or not self._same(rule, given, fixed)):
                    raise self._refuse(rule, given)
                if rule.fixed is SERVER_DEFAULT or fixed is None:
                    out.pop(rule.field, None)
                else:
                    out[rule.field] = fixed
            elif given not in (None, ""):
                self._check_value(rule, given)
        return out

    def check_resolved(self, kind: str, backend: str, config: Mapping[str, Any]) -> None:
        """After the server filled in defaults: every ``allowed``/``under`` field is within the policy."""
        self.check_backend(kind, backend)
        for rule in self.field_rules(kind, backend):
            if rule.fixed is None and rule.field in config:
                self._check_value(rule, config.get(rule.field))

    def check_data_info(self, data_info: Any, what: str = "dataInfo") -> None:
        """A dataInfo the server is about to read (or hand to a job): its backend is allowed, and every
        location it names (an s3 ``endpoint``/``bucketName``, a SciServer ``volume``...) is within the rules
        on the config field of the same name.  ``data_info`` is a :class:`~deepforge_adapters.storage.DataInfo`.
        """
        backend = data_info.backend
        try:
            self.check_backend("storage", backend)
        except PolicyError as exc:
            raise PolicyError(f"{what}: {exc}") from None
        data = data_info.data if isinstance(data_info.data, Mapping) else {}
        for rule in self.field_rules("storage", backend):
            if rule.field not in data or rule.fixed is SERVER_DEFAULT or rule.fixed is SERVER_URL:
                continue
            value = data[rule.field]
            try:
                if rule.fixed is not None:
                    if not self._same(rule, value, rule.fixed):
                        raise self._refuse(rule, value)
                else:
                    self._check_value(rule, value)
            except PolicyError as exc:
                raise PolicyError(f"{what}: {exc}") from None

    # ------------------------------------------------------------------------------------------- helpers
    def _same(self, rule: Rule, a: Any, b: Any) -> bool:
        return bool(_canon(rule, a) == _canon(rule, b))

    def _check_value(self, rule: Rule, value: Any) -> None:
        if rule.allowed is not None:
            value = "" if value is None else value  # unset compares as the empty string (list "" to allow it)
            if _canon(rule, value) not in [_canon(rule, v) for v in rule.allowed]:
                raise self._refuse(rule, value)
        elif rule.under is not None:
            if value in (None, ""):
                raise PolicyError(
                    f"{rule.key}: not set; the operator policy ({self.source}) requires {rule.describe()}"
                )
            real = Path(os.path.realpath(Path(str(value)).expanduser()))
            if not any(real == d or d in real.parents for d in rule.under):
                raise self._refuse(rule, value)

    def _refuse(self, rule: Rule, value: Any) -> PolicyError:
        secret = rule.field in _secret_fields(rule.kind, rule.backend)
        shown = "********" if secret else repr(value)
        must = "the operator's value" if secret else rule.describe()
        return PolicyError(
            f"{rule.key} = {shown} is not allowed by the operator policy ({self.source}): it must be {must}"
        )


def _secret_fields(kind: str, backend: str) -> set[str]:
    fields = _schema_fields(kind, backend) or {}
    return {n for n, f in fields.items() if f.is_auth}


def _canon(rule: Rule, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if (rule.kind, rule.backend, rule.field) in PATH_FIELDS:
        return os.path.realpath(os.path.expanduser(value)) if value else ""
    if rule.field in URL_FIELDS:
        return _norm_url(value) if value else ""
    return value


def _builtin(rules: Mapping[tuple[str, str, str], Rule]) -> dict[tuple[str, str, str], Rule]:
    out = dict(rules)
    for kind, backend, name, marker in BUILTIN_RULES:
        out.setdefault((kind, backend, name), Rule(kind, backend, name, fixed=marker))
    return out


def _parse_rule(
    kind: str,
    backend: str,
    name: str,
    spec: Any,
    fields: Mapping[str, Any] | None,
    base: Path | None,
    bad: Any,
) -> Rule:
    key = f"{kind}.{backend}.{name}"
    if fields is not None and name not in fields:
        raise bad(key, f"unknown field of {kind} backend {backend!r}; fields: {', '.join(sorted(fields))}")
    forms = ("fixed", "allowed", "under")
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in forms:
        raise bad(key, "must be one of { fixed = VALUE }, { allowed = [VALUES] }, { under = [DIRECTORIES] }")
    form, value = next(iter(spec.items()))
    is_path = (kind, backend, name) in PATH_FIELDS

    def path(v: Any, where: str) -> Path:
        if not isinstance(v, str) or not v:
            raise bad(where, "must be a non-empty path")
        p = Path(v).expanduser()
        if not p.is_absolute():
            p = (base or Path.cwd()) / p
        return Path(os.path.realpath(p))

    def typed(v: Any, where: str) -> Any:
        if fields is not None:
            from .config import ConfigSchema

            f = fields[name]
            try:
                ConfigSchema(backend, (f,)).validate({name: v})
            except DeepForgeError as exc:
                raise bad(where, str(exc)) from None
        return v

    if form == "under":
        if not is_path:
            raise bad(f"{key}.under", "only for path fields: " + ", ".join(".".join(p) for p in sorted(PATH_FIELDS)))
        if not isinstance(value, list) or not value:
            raise bad(f"{key}.under", "must be a non-empty list of directories")
        return Rule(kind, backend, name, under=tuple(path(v, f"{key}.under") for v in value))
    if form == "allowed":
        if not isinstance(value, list) or not value:
            raise bad(f"{key}.allowed", "must be a non-empty list of values")
        values = [str(path(v, f"{key}.allowed")) if is_path else typed(v, f"{key}.allowed") for v in value]
        return Rule(kind, backend, name, allowed=tuple(values))
    fixed = str(path(value, f"{key}.fixed")) if is_path else typed(value, f"{key}.fixed")
    return Rule(kind, backend, name, fixed=fixed)


_cache: dict[str, tuple[float, Policy]] = {}


def load(environ: Mapping[str, str] | None = None) -> Policy:
    """The policy in force: the file ``$DEEPFORGE_POLICY`` names, else :meth:`Policy.default`.

    A named file that is missing or invalid is an error (:class:`PolicyError`), never a silent fallback to
    the defaults: an operator who wrote a policy wants it, not something else.
    """
    environ = os.environ if environ is None else environ
    name = environ.get(POLICY_ENV, "").strip()
    if not name:
        return Policy.default()
    try:
        mtime = os.stat(name).st_mtime
    except OSError as exc:
        raise PolicyError(f"policy file {name} (from ${POLICY_ENV}): cannot read it: {exc.strerror}") from None
    cached = _cache.get(name)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    policy = Policy.from_file(name)
    _cache[name] = (mtime, policy)
    log.debug("operator policy from %s", name)
    return policy
