"""Convert a GGUF file into a dense Hugging Face checkpoint that vLLM can serve.

Run as ``python -m driftrec.llm.convert GGUF OUT_DIR`` (checkpoint.py does, in a subprocess, so the
heavy transformers/torch import never lands in the caller's process). transformers dequantizes the
GGUF; its tokenizer conversion drops llama.cpp's pre-tokenizer, so for ``tokenizer.ggml.pre`` values
we know, the upstream pre-tokenizer is written back (SmolLM2 splits digits singly).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from driftrec.llm.tokens import QWEN2_PATTERN

# llama.cpp pre-tokenizer name -> the tokenizers pre_tokenizer the original HF model ships.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
    },
    "gpt-2": _BYTE_LEVEL,
    "qwen2": {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": QWEN2_PATTERN},
                "behavior": "Isolated",
                "invert": False,
            },
            {**_BYTE_LEVEL, "use_regex": False},
        ],
    },
}


def gguf_pre_tokenizer(gguf_path: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.pre")
    return field.contents() if field is not None else None


def convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=name, dequantize=True),
    )
    # The weights are dense now; without this save_pretrained refuses ("quantized, not serializable").
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    pre = gguf_pre_tokenizer(gguf_path)
    tok_path = out_dir / "tokenizer.json"
    spec = json.loads(tok_path.read_text(encoding="utf-8"))
    if pre in PRE_TOKENIZERS:
        spec["pre_tokenizer"] = PRE_TOKENIZERS[pre]
        tok_path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    else:
        print(f"warning: unknown tokenizer.ggml.pre {pre!r}; kept transformers' pre-tokenizer", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m driftrec.llm.convert GGUF OUT_DIR")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
