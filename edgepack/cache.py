"""The build cache: a finished build's output directory (artifacts, reports), stored under the content hash of
everything that made it, so a repeated `build --auto` or an unchanged CI rebuild skips work it has done and says so.

The key hashes the model's weights and structure, the example inputs, the target file's content, the build's
settings, the compression recipe, the data files' content, and the versions of edgepack and every library involved.
Anything else changed means another key. An entry's figures were measured when it was built: whoever serves one says
so, with the date and host of that build. The cache is bounded (least recently used entries go first).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edgepack.errors import UsageError
from edgepack.fileio import sha256_file

DEFAULT_MAX_BYTES = 2 * 1024 ** 3
ENV = "EDGEPACK_CACHE"


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgepack"


@dataclass(frozen=True)
class BuildCache:
    root: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def open(cls, directory: Optional[Path], max_bytes: int = DEFAULT_MAX_BYTES) -> "BuildCache":
        """The cache at `directory` (else $EDGEPACK_CACHE, else the user's cache directory), checked writable."""
        root = Path(directory or os.environ.get(ENV) or default_dir())
        try:
            (root / "builds").mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise UsageError(f"cache directory {root} is not writable ({exc.strerror or exc}); pass --cache-dir DIR "
                             f"or --no-cache") from None
        return cls(root, max_bytes)

    def lookup(self, key: str) -> Optional[Path]:
        """The stored build directory for `key`, marked as just used; None when absent or incomplete."""
        entry = self.root / "builds" / key
        if not (entry / "report.json").is_file():
            return None
        os.utime(entry)
        return entry

    def store(self, key: str, build_dir: Path) -> None:
        """Copy a finished build in (atomically: a half-copied entry is never found), then trim to the bound."""
        final = self.root / "builds" / key
        if final.exists():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.root / "builds"))
        try:
            shutil.copytree(build_dir, tmp, dirs_exist_ok=True)
            os.replace(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return  # another process stored it first, or the disk is full: the build itself is unaffected
        self._trim()

    def _trim(self) -> None:
        entries = [e for e in (self.root / "builds").iterdir() if e.is_dir() and not e.name.startswith(".")]
        sizes = {e: sum(f.stat().st_size for f in e.rglob("*") if f.is_file()) for e in entries}
        total = sum(sizes.values())
        for entry in sorted(entries, key=lambda e: e.stat().st_mtime):  # least recently used first
            if total <= self.max_bytes:
                break
            shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry]


def build_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def model_digest(module: Any, example_inputs: Any) -> str:
    """The model's content: its structure (the module tree as printed), every parameter and buffer, and the example
    inputs (shapes, dtypes and values)."""
    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in list(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for x in example_inputs:
        digest.update(f"{tuple(x.shape)}{x.dtype}".encode())
        digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_digest(spec: Optional[str]) -> Optional[str]:
    """A data spec as it stands now: a file's bytes, a folder's listing with sizes and times; other specs (zoo)
    as written."""
    if not spec:
        return None
    path = Path(spec)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        listing = sorted((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
                         for f in path.rglob("*") if f.is_file())
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return spec


def age(created_iso: str) -> str:
    """'3 min ago' from a report's creation time, for the line that says a result came from the cache."""
    import datetime

    try:
        created = datetime.datetime.fromisoformat(created_iso)
    except ValueError:
        return created_iso
    seconds = time.time() - created.timestamp()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
