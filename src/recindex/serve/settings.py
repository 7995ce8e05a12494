"""Service settings: environment variables (RECINDEX_*) over an optional TOML file over defaults.

    RECINDEX_BUNDLE=runs/beauty RECINDEX_INDEX=faiss-HNSW32 RECINDEX_API_KEYS='["k1"]' recindex serve

API keys come from the environment or a settings file outside the repository, never from the code.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recindex.errors import RecIndexError


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECINDEX_", extra="forbid")

    bundle: Path | None = Field(None, description="Bundle directory to serve.")
    index: str | None = Field(None, description="Index inside the bundle; default: exact search.")
    api_keys: list[str] = Field(default_factory=list, description="Keys for write and admin endpoints.")
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
    read_only: bool = Field(
        False, description="Serve reads only (set for each process of `serve --workers N`, N > 1)."
    )


def load_settings(path: str | Path | None = None, **overrides) -> ServiceSettings:
    """Settings from a TOML file (if given), with RECINDEX_* environment variables and overrides on top."""
    values: dict = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise RecIndexError(f"{path}: cannot read service settings ({error})") from None
    env = ServiceSettings()  # the environment alone
    merged = {
        **values,
        **env.model_dump(exclude_unset=True),
        **{k: v for k, v in overrides.items() if v is not None},
    }
    return ServiceSettings(**merged)
