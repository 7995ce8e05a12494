"""Writing and checking artifact directories (bundles, indexes): atomically, with checksums.

An artifact is written into a temporary sibling directory and renamed into place only once complete,
so a failure never leaves a half-written artifact where a reader would find it. Its manifest lists the
sha256 of every file, and readers verify them before deserialising anything.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recindex.errors import BundleError
from recindex.hashing import sha256_file


@contextmanager
def staged_directory(path: Path) -> Iterator[Path]:
    """Yield an empty sibling of `path` to write into; on success it replaces `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder`, by path relative to it."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def verify_checksums(path: Path, files: dict[str, str]) -> None:
    """Refuse a listed file that is missing, outside `path`, or whose content changed."""
    root = Path(path).resolve()
    for name, expected in files.items():
        file = (root / name).resolve()
        if root not in file.parents:
            raise BundleError(f"{path}: manifest lists a file outside the directory: {name!r}")
        if not file.is_file():
            raise BundleError(f"{path}: file {name} listed in the manifest is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise BundleError(
                f"{path}: {name} is corrupt (sha256 {actual[:12]}..., manifest says {expected[:12]}...)"
            )


def read_manifest_json(path: Path, kind: str, required: tuple[str, ...]) -> dict:
    """The parsed `manifest.json` of an artifact directory, with its required keys present."""
    manifest_path = Path(path) / "manifest.json"
    try:
        if not Path(path).exists():
            raise BundleError(f"{str(path)[:200]} does not exist")
        if not manifest_path.is_file():
            raise BundleError(f"{str(path)[:200]} is not {kind}: no manifest.json")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except OSError as error:  # e.g. a name too long for the file system
        raise BundleError(f"{str(path)[:200]}: cannot read it ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{manifest_path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise BundleError(f"{manifest_path}: missing keys {missing}")
    return manifest
