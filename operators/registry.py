"""The one registry that YAML names resolve through: stream steps (`@operator`) and sinks (`@sink`).

A step factory takes a `BuildContext` and its typed `<Step>Config` and returns a callable
`(value, StepContext) -> Emit | Drop | Reject`. A sink factory returns a quixstreams `BaseSink`
(usually a `BatchingSink`). Bad data is a value (Reject); bugs and store outages are exceptions.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from operators.ports import Clock, utc_now

if TYPE_CHECKING:
    from config.settings import Settings
    from models.eta.base import Estimator
    from operators.metrics import PipelineMetrics
    from operators.ports import FacilityDirectory, FacilityLookup, ShipmentDirectory

T = TypeVar("T")

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(RuntimeError):
    """A component was registered wrongly (a bug in code, raised at import time)."""


class ResourceError(RuntimeError):
    """A step needs a resource (directory, estimator, secret) that start-up did not provide."""


# --- Step outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit(Generic[T]):
    """Pass `value` to the next step."""

    value: T


@dataclass(frozen=True, slots=True)
class Drop:
    """Stop here on purpose (e.g. a duplicate); counted, not dead-lettered."""

    reason: str

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.reason):
            raise ValueError(f"drop reason must be snake_case, got {self.reason!r}")


@dataclass(frozen=True, slots=True)
class Reject:
    """Bad data: goes to the dead-letter topic with `reason` (snake_case) and `detail`."""

    reason: str
    detail: str | Mapping[str, Any] = ""

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.reason):
            raise ValueError(f"reject reason must be snake_case, got {self.reason!r}")


Outcome = Emit[Any] | Drop | Reject


# --- What a step sees at run time ---------------------------------------------------------------


@runtime_checkable
class StateLike(Protocol):
    """The part of quixstreams' `State` the steps use; a dict-backed one serves tests."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class DictState:
    """A StateLike over a plain dict (one per message key), for tests and the local driver."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = {} if data is None else data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class PrefixedState:
    """Namespaces every key with the step id ("<step_id>:<key>"): steps sharing one store never
    collide (quixstreams gives all stateful steps of a dataframe the same store)."""

    __slots__ = ("_inner", "_prefix")

    def __init__(self, inner: StateLike, step_id: str) -> None:
        self._inner = inner
        self._prefix = f"{step_id}:"

    def get(self, key: str, default: Any = None) -> Any:
        return self._inner.get(self._prefix + key, default)

    def set(self, key: str, value: Any) -> None:
        self._inner.set(self._prefix + key, value)

    def delete(self, key: str) -> None:
        self._inner.delete(self._prefix + key)


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """Where the record came from; used for key checks, reference time and dead-letter sources."""

    topic: str
    partition: int
    offset: int
    key: bytes | str | None
    timestamp_ms: int
    headers: Any = None

    @property
    def key_text(self) -> str | None:
        if self.key is None:
            return None
        if isinstance(self.key, bytes):
            return self.key.decode("utf-8", errors="replace")
        return str(self.key)

    @property
    def timestamp(self) -> datetime | None:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC) if self.timestamp_ms > 0 else None


@dataclass(frozen=True, slots=True)
class StepContext:
    """Per-record context handed to a step: message metadata, the step's (prefixed) state."""

    message: MessageMeta
    state: StateLike | None = None


class Step(Protocol):
    def __call__(self, value: Any, ctx: StepContext) -> Outcome: ...


# --- What a factory sees at build time ---------------------------------------------------------


@dataclass
class Resources:
    """Dependencies built once at start-up (cosmicpython's bootstrap) and handed to factories.

    The CLI fills it from settings (PostgreSQL-backed directories, the ETA estimator); tests fill
    it with in-memory fakes. `extra` is free for sinks (e.g. a shared SQLAlchemy engine).
    """

    clock: Clock = utc_now
    settings: Settings | None = None
    facilities: FacilityDirectory | Callable[[str], bool] | None = None
    facility_lookup: FacilityLookup | None = None
    shipments: ShipmentDirectory | None = None
    estimator: Estimator | None = None
    metrics: PipelineMetrics | None = None
    secrets: Mapping[str, str | bytes] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def secret(self, name: str, *, min_bytes: int = 16) -> bytes:
        """A secret by name: from `secrets`, else the environment variable of that name."""
        raw = self.secrets.get(name)
        if raw is None:
            raw = os.environ.get(name)
        if raw is None:
            raise ResourceError(f"secret {name} is not set (environment variable {name})")
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        if len(data) < min_bytes:
            raise ResourceError(f"secret {name} is too short: need at least {min_bytes} bytes")
        return data


@dataclass(frozen=True)
class BuildContext:
    """Handed to every factory: which step it builds and the start-up resources."""

    topology: str
    step_id: str
    use: str
    resources: Resources

    def require(self, name: str) -> Any:
        value = getattr(self.resources, name)
        if value is None:
            raise ResourceError(
                f"topology {self.topology!r}, step {self.step_id!r} (use: {self.use}) needs "
                f"resource {name!r}, which start-up did not provide"
            )
        return value


# --- Specs and the registry ---------------------------------------------------------------------


class StepConfig(BaseModel):
    """Base for `<Step>Config` classes: unknown knobs are errors, configs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Kind = Literal["operator", "sink"]


@dataclass(frozen=True)
class ComponentSpec:
    """One registered component: from it come build, lint, describe and the docs."""

    name: str
    kind: Kind
    config: type[BaseModel]
    factory: Callable[[BuildContext, Any], Any]
    description: str
    stateful: bool = False
    # Reject reasons the step may produce (documentation, describe, and the lint DLQ check).
    rejects: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return getattr(self.factory, "__module__", "?")


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


class Registry:
    """Name -> ComponentSpec, for operators and sinks in one namespace (a YAML `use:` is unique)."""

    def __init__(self) -> None:
        self._specs: dict[str, ComponentSpec] = {}

    def copy(self) -> Registry:
        other = Registry()
        other._specs = dict(self._specs)
        return other

    # Registration ---------------------------------------------------------------------------

    def register(self, spec: ComponentSpec) -> ComponentSpec:
        if not NAME_RE.match(spec.name):
            raise RegistryError(f"component name must be snake_case, got {spec.name!r}")
        if not (isinstance(spec.config, type) and issubclass(spec.config, BaseModel)):
            raise RegistryError(f"{spec.name}: config must be a pydantic model class")
        if spec.config.model_config.get("extra") != "forbid":
            raise RegistryError(
                f"{spec.name}: {spec.config.__name__} must forbid extra keys "
                f"(model_config extra='forbid', or subclass operators.registry.StepConfig)"
            )
        if not spec.description:
            raise RegistryError(f"{spec.name}: a one-line description (or docstring) is required")
        for reason in spec.rejects:
            if not NAME_RE.match(reason):
                raise RegistryError(f"{spec.name}: reject reason must be snake_case, got {reason!r}")
        existing = self._specs.get(spec.name)
        if existing is not None and _qualname(existing.factory) != _qualname(spec.factory):
            raise RegistryError(
                f"{spec.name!r} is already registered by {_qualname(existing.factory)}; "
                f"{_qualname(spec.factory)} cannot take the same name"
            )
        self._specs[spec.name] = spec
        return spec

    def operator(
        self,
        name: str,
        *,
        config: type[BaseModel],
        description: str | None = None,
        stateful: bool = False,
        rejects: Iterable[str] = (),
    ) -> Callable[[Callable[[BuildContext, Any], Any]], Callable[[BuildContext, Any], Any]]:
        """Register a stream-step factory `(BuildContext, Config) -> Step` under `name`."""

        def deco(factory: Callable[[BuildContext, Any], Any]) -> Callable[[BuildContext, Any], Any]:
            self.register(
                ComponentSpec(
                    name=name,
                    kind="operator",
                    config=config,
                    factory=factory,
                    description=description or _first_line(factory),
                    stateful=stateful,
                    rejects=tuple(rejects),
                )
            )
            return factory

        return deco

    def sink(
        self,
        name: str,
        *,
        config: type[BaseModel],
        description: str | None = None,
    ) -> Callable[[Callable[[BuildContext, Any], Any]], Callable[[BuildContext, Any], Any]]:
        """Register a sink factory `(BuildContext, Config) -> quixstreams BaseSink` under `name`.

        The factory may be the sink class itself (`__init__(self, ctx, config)`); it must do no
        I/O: connections belong in the sink's `setup()`, called by quixstreams at start.
        """

        def deco(factory: Callable[[BuildContext, Any], Any]) -> Callable[[BuildContext, Any], Any]:
            self.register(
                ComponentSpec(
                    name=name,
                    kind="sink",
                    config=config,
                    factory=factory,
                    description=description or _first_line(factory),
                )
            )
            return factory

        return deco

    # Lookup ---------------------------------------------------------------------------------

    def get(self, name: str) -> ComponentSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self, kind: Kind | None = None) -> list[str]:
        return sorted(n for n, s in self._specs.items() if kind is None or s.kind == kind)

    def specs(self) -> list[ComponentSpec]:
        return [self._specs[n] for n in sorted(self._specs)]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


REGISTRY = Registry()
"""The process-wide registry; `load_components()` fills it by importing the component packages."""

operator = REGISTRY.operator
sink = REGISTRY.sink

DEFAULT_PACKAGES: tuple[str, ...] = ("operators", "sinks")


def load_components(packages: Iterable[str] = DEFAULT_PACKAGES) -> Registry:
    """Import every module of the component packages so their decorators register them.

    Idempotent (modules import once). An import error is a bug and propagates.
    """
    for package_name in packages:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{package_name}."):
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            importlib.import_module(info.name)
    return REGISTRY
