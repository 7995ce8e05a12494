"""Run configuration: the sections (`config.sections`) <- a TOML file <- `--set section.key=value` overrides.

Models and trainers receive their own section (composition): nothing reads a global config object.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from recindex.config.sections import (  # noqa: F401  (the sections are read from here)
    MODEL_KINDS,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    IndexCheck,
    IndexConfig,
    MFLIConfig,
    ModelConfig,
    ModelKind,
    SCIConfig,
    TrainConfig,
    URIConfig,
    URIIndexSource,
)
from recindex.errors import RecIndexError


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """`value` as the field's type, or an error that says what was expected."""
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise RecIndexError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is tuple:
        if isinstance(value, str):  # the comma-separated form of configs written before lists
            value = [part.strip() for part in value.split(",") if part.strip()]
            value = [_number(part) for part in value] if get_args(annotation)[0] is not str else value
        if not isinstance(value, list | tuple):
            raise RecIndexError(f"{where}: expected a list, got {value!r}")
        element = get_args(annotation)[0]
        return tuple(_coerce(item, element, f"{where}[{i}]") for i, item in enumerate(value))
    if value is None and type(None) in get_args(annotation):
        return None
    if origin is dict or dict in map(get_origin, get_args(annotation)):
        return _table(value, annotation, where)
    kind = next((k for k in (bool, int, float, str) if annotation is k or k in get_args(annotation)), None)
    if kind is None:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecIndexError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


coerce_value = _coerce  # the typed index specs read their values with it


def _table(value: Any, annotation: Any, where: str) -> dict[str, Any]:
    """A table whose values are of the annotation's value type (one type or a union)."""
    table = next(a for a in (annotation, *get_args(annotation)) if get_origin(a) is dict)
    kinds = get_args(get_args(table)[1]) or (get_args(table)[1],)
    if not isinstance(value, dict):
        raise RecIndexError(f"{where}: expected a table, got {value!r}")
    for key, item in value.items():
        if Any not in kinds and not isinstance(item, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise RecIndexError(f"{where}.{key}: expected {names}, got {item!r}")
    return dict(value)


def _number(text: str) -> Any:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text  # left for the element's own check to refuse, with its name


def _section(cls, values: dict[str, Any], where: str):
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise RecIndexError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(known)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def _index_section(values: dict[str, Any], where: str, check_index: IndexCheck | None) -> IndexConfig:
    """[index]: backend, search, and every other key a backend's table (typed by `check_index`)."""
    keys = [f.name for f in dataclasses.fields(IndexConfig) if f.name != "backends"]
    own = {k: v for k, v in values.items() if k in keys}
    tables = {k: v for k, v in values.items() if k not in own}
    for name in (name for name, table in tables.items() if not isinstance(table, dict)):
        valid = ", ".join(keys)
        raise RecIndexError(f"{where} [index]: unknown key {name!r}; valid: {valid}, [index.BACKEND]")
    section = dataclasses.replace(_section(IndexConfig, own, f"{where} [index]"), backends=tables)
    return check_index(section, where) if check_index is not None else section


def from_dict(
    raw: dict[str, Any], where: str = "config", check_index: IndexCheck | None = None
) -> ExperimentConfig:
    """The config of `raw`; without `check_index` the [index] tables are checked where they are used."""
    raw = _with_model_kind(raw, where)
    sections = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}
    unknown = set(raw) - set(sections)
    if unknown:
        raise RecIndexError(f"{where}: unknown section(s) {sorted(unknown)}; valid: {sorted(sections)}")
    hints = get_type_hints(ExperimentConfig)
    built = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise RecIndexError(f"{where}: [{name}] must be a table")
        if name == "index":
            built[name] = _index_section(values, where, check_index)
            continue
        built[name] = _section(hints[name], values, f"{where} [{name}]")
    config = ExperimentConfig(**built)
    _check_family(config, where)
    return config


# Settings whose older forms are still read (see _with_model_kind): the family switches, and a URI
# bundle's folder in uri.index.
LEGACY_FORMS = {("mfli", "enabled"), ("uri", "enabled"), ("uri", "index")}


def _with_model_kind(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Configs (and bundle manifests) written before `model.kind` switched families on with
    `[mfli] enabled`, `[uri] enabled`, or a positive SCI weight, and named a URI bundle in `uri.index`:
    read them as what they meant."""
    raw = {name: dict(values) if isinstance(values, dict) else values for name, values in raw.items()}
    sections = {name: values for name, values in raw.items() if isinstance(values, dict)}
    enabled = [name for name in ("mfli", "uri") if sections.get(name, {}).pop("enabled", False)]
    uri = sections.get("uri", {})
    if isinstance(uri.get("index"), str) and uri["index"] not in get_args(URIIndexSource):
        # `uri.index` once named a URI bundle's folder as well as a method
        uri["index_bundle"], uri["index"] = uri["index"], "bundle"
    model = sections.get("model", {})
    if "kind" in model:
        if enabled and enabled != [model["kind"]]:
            raise RecIndexError(f"{where}: [{enabled[0]}] enabled contradicts model.kind = {model['kind']!r}")
        return raw
    if len(enabled) > 1:
        raise RecIndexError(f"{where}: [mfli] and [uri] are both enabled; a run trains one of them")
    sci = sections.get("sci", {})
    symmetric = any(
        isinstance(sci.get(key), int | float) and sci[key] > 0
        for key in ("symmetric_weight", "consistency_weight")
    )
    kind = enabled[0] if enabled else "sci" if symmetric else None
    if kind is not None:
        raw["model"] = {**model, "kind": kind}
    return raw


def _check_family(config: ExperimentConfig, where: str) -> None:
    sci = config.sci
    symmetric = sci.symmetric_weight > 0 or sci.consistency_weight > 0
    if config.model.kind == "sci" and not symmetric:
        raise RecIndexError(
            f'{where}: model.kind = "sci" trains with sci.symmetric_weight > 0 or sci.consistency_weight > 0'
        )
    if symmetric and config.model.kind != "sci":
        raise RecIndexError(
            f'{where}: [sci] training applies to the plain two-tower model (model.kind = "sci"), '
            f"not to model.kind = {config.model.kind!r}"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=0.001` -> (['train', 'lr'], 0.001). Values are TOML; bare words are strings."""
    if "=" not in text:
        raise RecIndexError(f"--set {text!r}: expected section.key=value, e.g. train.lr=0.001")
    key, value = text.split("=", 1)
    path = key.strip().split(".")
    nested = len(path) == 3 and path[0] == "index"  # index.NAME.key: a setting of one backend's table
    if (len(path) != 2 and not nested) or not all(path):
        raise RecIndexError(f"--set {text!r}: the key must be section.key, e.g. model.dim")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return path, parsed


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, check_index: IndexCheck | None = None
) -> ExperimentConfig:
    raw: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.exists():
            raise RecIndexError(f"config file {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise RecIndexError(f"{path}: invalid TOML: {error}") from None
    for text in overrides or []:
        keys, value = parse_override(text)
        if len(keys) == 3:  # index.NAME.key: checked with the whole [index] section
            raw.setdefault("index", {}).setdefault(keys[1], {})[keys[2]] = value
            continue
        section, key = keys
        raw.setdefault(section, {})[key] = _checked_override(text, section, key, value)
    return from_dict(raw, where, check_index)


def _checked_override(text: str, section: str, key: str, value: Any) -> Any:
    """The value of one `--set`, checked against the known settings, so that a typo in it is reported
    as the override's, not as the config file's."""

    def unknown(what: str, name: str, known: list[str]) -> RecIndexError:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return RecIndexError(f"--set {text!r}: unknown {what}{hint}; valid: {', '.join(known)}")

    sections = get_type_hints(ExperimentConfig)
    if section not in sections:
        raise unknown(f"section {section!r}", section, list(sections))
    hints = get_type_hints(sections[section])
    if (section, key) in LEGACY_FORMS:
        return value  # from_dict reads it as what it meant, then checks it
    if section == "index" and key not in hints:
        return value  # a whole [index.NAME] table: checked with the section
    if key not in hints:
        raise unknown(f"key {key!r} in [{section}]", key, list(hints))
    return _coerce(value, hints[key], f"--set {text!r}")
