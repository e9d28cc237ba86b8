"""Preparing the model is atomic: a failed or killed conversion never leaves a checkpoint to be used."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from driftrec.config import Settings, load_settings
from driftrec.llm.checkpoint import MARKER, CheckpointError, PreparedModel, prepare_model


@pytest.fixture()
def private_cache(tmp_path: Path, prepared: PreparedModel) -> Settings:
    """A fresh cache that serves a copy of the packaged GGUF, so conversions here start from nothing."""
    gguf = tmp_path / "model.gguf"
    shutil.copyfile(prepared.gguf_path, gguf)
    return load_settings(cache_dir=tmp_path / "cache", model_gguf_path=gguf)


def test_a_failed_conversion_leaves_no_checkpoint(private_cache: Settings) -> None:
    with pytest.raises(CheckpointError, match=r"converting model\.gguf failed"):
        prepare_model(private_cache, python=str(Path(shutil.which("false") or "/bin/false")))
    models = private_cache.cache_dir / "models"
    assert not any(p.name.startswith("model-hf-") for p in models.iterdir())


def test_debris_from_a_crash_is_replaced_by_a_complete_checkpoint(private_cache: Settings) -> None:
    models = private_cache.cache_dir / "models"
    models.mkdir(parents=True)
    # what a kill mid-conversion leaves: a temporary folder, and (from an old layout) a folder with no marker
    stale_tmp = models / ".model-hf-000000000000.tmp123"
    stale_tmp.mkdir()
    prepared = prepare_model(private_cache)
    assert (prepared.checkpoint_dir / MARKER).exists()
    assert (prepared.checkpoint_dir / "model.safetensors").stat().st_size > 100_000_000
    assert prepared.encoding_path.exists()
    # a half-written final folder without its marker is never trusted: it is rebuilt
    (prepared.checkpoint_dir / MARKER).unlink()
    (prepared.checkpoint_dir / "model.safetensors").write_bytes(b"half")
    again = prepare_model(private_cache)
    assert (again.checkpoint_dir / MARKER).exists()
    assert (again.checkpoint_dir / "model.safetensors").stat().st_size > 100_000_000


def test_missing_configured_gguf_names_the_setting(tmp_path: Path) -> None:
    settings = load_settings(cache_dir=tmp_path, model_gguf_path=tmp_path / "absent.gguf")
    with pytest.raises(CheckpointError, match="DRIFTREC_MODEL_GGUF_PATH"):
        prepare_model(settings)
