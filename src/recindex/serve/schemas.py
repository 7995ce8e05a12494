"""Request and response bodies of the HTTP API (validated by pydantic; sizes bounded here)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_VECTOR_DIM = 4096
MAX_RECENT = 1000
MAX_FILTER_IDS = 10_000
MAX_TRIGGERS = 100

ItemId = Annotated[str, Field(min_length=1, max_length=256)]
# A user id as a JSON number: whole, within int64 (what a dataset's integer ids are), never a bool or
# a float. It names the same user as its decimal string: 42 and "42" (see recommend.find_user).
UserNumber = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    where: str | None = Field(
        None,
        max_length=10_000,
        description='e.g. brand == "acme" and popularity >= 10; GET /v1/attributes lists what can be used',
    )
    allow_ids: list[int] | None = Field(None, max_length=MAX_FILTER_IDS)
    deny_ids: list[int] | None = Field(None, max_length=MAX_FILTER_IDS)


class RecommendRequest(BaseModel):
    """Exactly one of user_id, recent_items or vector."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserNumber | ItemId | None = Field(
        None, description='A user of the bundle, by id as a number or a string: 42 and "42" are one user.'
    )
    recent_items: list[ItemId] | None = Field(None, min_length=1, max_length=MAX_RECENT)
    vector: list[float] | None = Field(None, min_length=1, max_length=MAX_VECTOR_DIM)
    k: int = Field(10, ge=1, description="How many items (at most the service's max_k).")
    filter: FilterBody | None = None
    exclude_seen: bool = True
    describe: bool = Field(
        False, description="Add each item's title or attributes (for people, not rankers)."
    )


class SimilarItemsRequest(BaseModel):
    """Item-to-item: the items most like one or more trigger items."""

    model_config = ConfigDict(extra="forbid")

    item_ids: list[ItemId] = Field(min_length=1, max_length=MAX_TRIGGERS)
    k: int = Field(10, ge=1, description="How many items (at most the service's max_k).")
    filter: FilterBody | None = None
    exclude_triggers: bool = True
    describe: bool = False


class ScoredItem(BaseModel):
    item_id: str
    score: float
    about: str | None = Field(None, description="Title or attributes, when `describe` was asked for.")


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    bundle_id: str
    collection: str | None = Field(
        None, description="The Milvus collection searched (Milvus-backed indexes; names the version)."
    )
    fallback: str | None = Field(None, description="Why the popularity list answered, if it did.")
    took_ms: float = Field(description="Time the service spent on the request.")


class DescribedItem(BaseModel):
    item_id: str
    about: str


class UserHistory(BaseModel):
    user_id: str
    bundle_id: str
    history: list[DescribedItem]


class AttributeSummary(BaseModel):
    name: str
    kind: str = Field(description="str, num or bool")
    items: int | None = Field(description="How many items hold a value.")
    examples: list[str | int | float | bool] = Field(
        description="The most common strings; the min, median and max of numbers; true/false."
    )


class AttributesPage(BaseModel):
    bundle_id: str
    attributes: list[AttributeSummary]


class UserPage(BaseModel):
    users: list[dict]
    total: int


AttributeValue = str | float | bool | None


class ItemBody(BaseModel):
    """One item, by content features (token names the model knows) or by vector."""

    model_config = ConfigDict(extra="forbid")

    item_id: ItemId
    features: list[Annotated[str, Field(max_length=1024)]] | None = Field(None, min_length=1, max_length=64)
    vector: list[float] | None = Field(None, min_length=1, max_length=MAX_VECTOR_DIM)
    attributes: dict[Annotated[str, Field(max_length=64)], AttributeValue] = Field(
        default_factory=dict, max_length=64
    )


class UpsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemBody] = Field(min_length=1, max_length=1000)


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[ItemId] = Field(min_length=1, max_length=1000)


class WriteResponse(BaseModel):
    sequence: int = Field(
        description="Position of the change in the write-ahead log (durable once returned)."
    )
    items: int


class StageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: str = Field(min_length=1, max_length=4096, description="Bundle directory on the server.")
    index: str | None = Field(None, max_length=64, description="Index inside it; default: exact search.")
