"""Where model files live on a box, and fetching them by their pinned URL and checksum."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from edge.detectors.onnx import file_sha256
from edge.errors import ModelChecksumError, ModelError
from firmware_configs.models import ModelProfile

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("EDGE_MODEL_DIR", "/var/lib/gridwatch/models"))
_CHUNK = 1024 * 1024


def search_dirs(cache_dir: Path | None = None) -> list[Path]:
    """The model cache first, then GRIDWATCH_ASSETS/models (tests, demo)."""
    dirs = [cache_dir or DEFAULT_CACHE]
    assets = os.environ.get("GRIDWATCH_ASSETS")
    if assets:
        dirs.append(Path(assets) / "models")
    return dirs


def find_model(profile: ModelProfile, cache_dir: Path | None = None) -> Path:
    """The model file of `profile`; raise ModelError saying where it looked and how to fix."""
    for directory in search_dirs(cache_dir):
        candidate = directory / profile.file
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(d) for d in search_dirs(cache_dir))
    raise ModelError(
        profile.name,
        f"{profile.file} not found in {looked}; run `gridwatch edge fetch-model {profile.name}`",
    )


def fetch_model(
    profile: ModelProfile, cache_dir: Path, *, url: str | None = None, timeout_s: float = 60.0
) -> Path:
    """Download the model into the cache; a file whose sha256 differs is refused, not kept."""
    source = url or (str(profile.url) if profile.url else None)
    if source is None:
        raise ModelError(profile.name, "the profile has no download URL")
    target = cache_dir / profile.file
    if target.is_file() and file_sha256(target) == profile.sha256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".fetch-", delete=False) as tmp:
        try:
            with urllib.request.urlopen(source, timeout=timeout_s) as response:  # noqa: S310
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > profile.size_bytes * 2:
                        raise ModelError(profile.name, f"{source} is larger than expected")
                    digest.update(chunk)
                    tmp.write(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
        except OSError as exc:
            Path(tmp.name).unlink(missing_ok=True)
            raise ModelError(profile.name, f"cannot download {source}: {exc}") from exc
        except ModelError:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    if digest.hexdigest() != profile.sha256:
        Path(tmp.name).unlink(missing_ok=True)
        raise ModelChecksumError(
            profile.name,
            f"{source} has sha256 {digest.hexdigest()}, the profile pins {profile.sha256}",
        )
    os.replace(tmp.name, target)  # atomic: a half-written model is never in the cache
    logger.info("fetched model profile=%s bytes=%d path=%s", profile.name, size, target)
    return target
