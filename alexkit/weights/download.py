"""Download torchvision's ImageNet AlexNet, check its sha256, and import it into the store."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from alexkit.errors import WeightsError
from alexkit.paths import alexkit_home
from alexkit.weights._common import file_sha256
from alexkit.weights.importer import DEFAULT_NAMES, import_weights
from alexkit.weights.store import WeightsEntry, check_free

logger = logging.getLogger(__name__)

TORCHVISION_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
TORCHVISION_FILENAME = "alexnet-owt-7be5be79.pth"
TORCHVISION_SHA256_PREFIX = "7be5be79"
#: Environment variable overriding the download URL (a mirror; the sha256 is still checked).
URL_ENV = "ALEXKIT_WEIGHTS_URL"


def _download(url: str, target: Path, progress: Callable[[int, int | None], None] | None) -> str:
    """Stream ``url`` to ``target`` atomically; return its sha256."""
    digest = hashlib.sha256()
    tmp_fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(tmp_fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            total = int(total) if total and str(total).isdigit() else None
            done = 0
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return digest.hexdigest()


def _torch_hub_cached(filename: str) -> Path | None:
    """torchvision's own download of ``filename``, if this machine already has it."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    path = Path(torch_home) / "hub" / "checkpoints" / filename
    return path if path.is_file() else None


def download_weights(
    source: str = "torchvision",
    *,
    name: str | None = None,
    overwrite: bool = False,
    url: str | None = None,
    sha256_prefix: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> WeightsEntry:
    """Fetch torchvision's ImageNet AlexNet, check its sha256 prefix, and import it.

    The verified file is kept in ``$ALEXKIT_HOME/downloads`` (and one already in torch's hub
    cache is reused), so a second import needs no network.

    Args:
        source: only ``"torchvision"``: bvlc_alexnet.npy has no stable official URL.
        name: the store entry's name (default ``torchvision-imagenet``).
        overwrite: replace an existing entry of that name.
        url: where to fetch from (default ``$ALEXKIT_WEIGHTS_URL`` or PyTorch's URL).
        sha256_prefix: the prefix the file's sha256 must start with (default: torchvision's
            ``7be5be79``).
        progress: called with (bytes so far, total bytes or None) while downloading.

    Raises:
        WeightsError: offline, unreachable, or a file whose sha256 does not match.
    """
    if source != "torchvision":
        raise WeightsError(
            f"cannot download {source!r} weights: only 'torchvision' has an official URL; for "
            "Caffe's weights get bvlc_alexnet.npy and run "
            "`alexkit weights import bvlc_alexnet.npy --format bvlc-npy`"
        )
    name = check_free(name or DEFAULT_NAMES["torchvision"], overwrite)
    url = url or os.environ.get(URL_ENV) or TORCHVISION_URL
    sha256_prefix = sha256_prefix or TORCHVISION_SHA256_PREFIX
    filename = TORCHVISION_FILENAME
    downloads = alexkit_home() / "downloads"
    cached = downloads / filename
    local = cached if cached.is_file() else _torch_hub_cached(filename)
    if local is not None and file_sha256(local).startswith(sha256_prefix):
        logger.info("using the already downloaded %s", local)
        return import_weights(local, "torchvision", name=name, overwrite=overwrite, source=url)

    downloads.mkdir(parents=True, exist_ok=True)
    fetched = downloads / f".{filename}.unverified"
    try:
        digest = _download(url, fetched, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"cannot download {url} ({reason}); are you offline? Download it on another "
            f"machine and run `alexkit weights import {filename} --format torchvision`"
        ) from None
    try:
        if not digest.startswith(sha256_prefix):
            raise WeightsError(
                f"{url}: downloaded file has sha256 {digest[:16]}..., expected it to start "
                f"with {sha256_prefix}; the download is corrupt or not torchvision's AlexNet "
                "(nothing was stored)"
            )
        os.replace(fetched, cached)
    finally:
        if fetched.exists():
            fetched.unlink()
    return import_weights(cached, "torchvision", name=name, overwrite=overwrite, source=url)
