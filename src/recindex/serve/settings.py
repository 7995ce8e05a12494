"""Service settings: environment variables (RECINDEX_*) over an optional TOML file over defaults.

    RECINDEX_BUNDLE=runs/beauty RECINDEX_INDEX=faiss-HNSW32 RECINDEX_API_KEYS=k1,k2 recindex serve

API keys come from the environment or a settings file outside the repository, never from the code:
comma-separated (`k1,k2`) or a JSON list (`["k1","k2"]`, for keys that hold commas). A setting that
does not parse is reported in one line naming it and the form it takes (`load_settings`).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from recindex.errors import RecIndexError
from recindex.serve.replication_nats import parse_stream_url

API_KEYS_FORM = 'comma-separated keys (k1,k2) or a JSON list (["k1","k2"])'
ApiKey = Annotated[str, Field(min_length=1, max_length=1024)]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECINDEX_", extra="forbid")

    bundle: Path | None = Field(None, description="Bundle directory to serve.")
    index: str | None = Field(None, description="Index inside the bundle; default: exact search.")
    # NoDecode: the environment's value reaches the validator below as the text it is, rather than
    # being parsed as JSON first (which fails on `k1,k2` with a traceback)
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(
        default_factory=list, description=f"Keys for write and admin endpoints: {API_KEYS_FORM}."
    )
    open_reads: bool = Field(True, description="Read endpoints need no key when true.")
    max_k: int = Field(1000, ge=1, le=16_384, description="Largest k a request may ask for.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted.")
    state_dir: Path = Field(Path("recindex_state"), description="Where the write-ahead log lives.")
    recall_sample_rate: float = Field(
        0.01, ge=0, le=1, description="Share of requests checked by exact search."
    )
    recall_checks_per_second: float = Field(
        2.0, ge=0, le=1000, description="At most this many such checks per second (each is a full scan)."
    )
    min_index_recall: float = Field(0.9, ge=0, le=1, description="Promotion gate: staged index recall@100.")
    compact_every: int = Field(
        10_000, ge=0, description="Fold the log into a snapshot after this many changes (0: never)."
    )
    threads: int = Field(
        1,
        ge=1,
        le=256,
        description="Threads each search may use (BLAS, OpenMP, torch). One serves concurrent requests "
        "best: several requests already keep the cores busy, and nested thread teams fight for them.",
    )
    device: str = Field(
        "cpu",
        description="Where the query encoder runs: cpu, auto (a GPU when torch sees one), cuda or cuda:N. "
        "One query is a small pass: the CPU serves it well; a GPU pays off for heavy encoders.",
    )
    log: str | None = Field(
        None,
        description="The item log replicas share: unset for the state folder's write-ahead log (one "
        "machine, `--workers N`), or a NATS JetStream stream, nats://host:port[,host:port]/STREAM"
        "[?replicas=N], for replicas on several machines (one process each, each its own state_dir).",
    )
    read_only: bool = Field(
        False, description="Serve reads only: follow the log others write, answer writes with 503."
    )
    # Replicas over one Milvus server or cluster (serve.fleet; docs/scale.md, "Replicas over Milvus").
    fleet: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Serve a Milvus-backed bundle as one replica of this fleet: the name of the Milvus "
        "alias that names the live bundle version's collection (writes and promotions go through Milvus; "
        "no log, no state folder).",
    )
    fleet_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Strong",
        description="Consistency of a fleet replica's searches: Strong finds every replica's acknowledged "
        "writes at the next query (it waits for the server's next time tick); Session finds this "
        "replica's own at once and the others' within a tick or so.",
    )
    fleet_poll_ms: float = Field(
        200.0, ge=10, le=60_000, description="How often a fleet replica checks the alias and item records."
    )

    # Batching of concurrent POST /v1/recommend requests (serve.batching; docs/service.md).
    batch_window_ms: float = Field(
        1.0,
        ge=0,
        le=100,
        description="How long the first of several concurrent recommend requests waits for others to "
        "share its encoder pass and index search (0: no batching).",
    )
    batch_max_size: int = Field(64, ge=1, le=4096, description="Most recommend requests in one batch.")
    batch_queue_limit: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Most recommend requests waiting for a batch; more are refused with 503 (at least "
        "batch_max_size).",
    )
    batch_timeout_ms: float = Field(
        1000.0,
        ge=1,
        le=600_000,
        description="A recommend request still waiting for its batch this long is refused with 503.",
    )

    @field_validator("log")
    @classmethod
    def _stream_url(cls, value):
        if value is not None:
            try:
                parse_stream_url(value)
            except RecIndexError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_text(cls, value):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("not a JSON list") from None
        return [key.strip() for key in text.split(",") if key.strip()]

    @field_validator("batch_queue_limit")
    @classmethod
    def _queue_holds_a_batch(cls, value, info):
        size = info.data.get("batch_max_size")
        if size is not None and value < size:
            raise ValueError(f"it must be at least batch_max_size ({size})")
        return value


def load_settings(path: str | Path | None = None, **overrides) -> ServiceSettings:
    """Settings from a TOML file (if given), with RECINDEX_* environment variables and overrides on top."""
    values: dict = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise RecIndexError(f"{path}: cannot read service settings ({error})") from None
    try:
        env = ServiceSettings()  # the environment alone
        merged = {
            **values,
            **env.model_dump(exclude_unset=True),
            **{k: v for k, v in overrides.items() if v is not None},
        }
        return ServiceSettings(**merged)
    except ValidationError as error:
        raise RecIndexError(_one_line(error, path)) from None
    except SettingsError as error:  # a value the environment source could not decode
        raise RecIndexError(f"service settings: {error}") from None


def expected_form(name: str) -> str:
    """What a setting takes, in words, from its type and bounds."""
    if name == "api_keys":
        return API_KEYS_FORM
    field = ServiceSettings.model_fields[name]
    kind = field.annotation
    bounds = {}
    for rule in field.metadata:
        for key in ("ge", "le"):
            if getattr(rule, key, None) is not None:
                bounds[key] = getattr(rule, key)
    words = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind)
    if words is None:
        return "a path" if "Path" in str(kind) else "text"
    if "ge" in bounds and "le" in bounds:
        return f"{words} from {bounds['ge']} to {bounds['le']}"
    return f"{words} of at least {bounds['ge']}" if "ge" in bounds else words


def _one_line(error: ValidationError, path) -> str:
    """The first problem of a settings ValidationError, naming the setting where it can be set."""
    problem = error.errors()[0]
    name = str(problem["loc"][0]) if problem["loc"] else "?"
    if problem["type"] == "extra_forbidden":
        known = ", ".join(ServiceSettings.model_fields)
        return f"unknown service setting {name!r} in {path or 'the settings'}; the settings are: {known}"
    if name not in ServiceSettings.model_fields:
        return f"service settings: {problem['msg']}"
    where = f"RECINDEX_{name.upper()}" + (f" or {name} in {path}" if path is not None else "")
    got = "" if name == "api_keys" else f" is {problem.get('input')!r}"  # keys are secrets: never echoed
    message = problem["msg"].removeprefix("Value error, ")
    return f"service setting {name} ({where}){got}: {message}; expected {expected_form(name)}"
