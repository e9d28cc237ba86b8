"""Offline token counting with tiktoken, built from the served model's own vocabulary.

tiktoken normally downloads its BPE files at first use, which fails on a machine that only reaches
package registries. A byte-level BPE tokenizer whose vocabulary is in merge order (GPT-2 style, as
SmolLM2's is) maps exactly onto a ``tiktoken.Encoding``: a token's rank is its id. So the encoding is
built from the model's tokenizer.json once, cached as a ``.tiktoken`` file plus a small JSON sidecar
(pattern and special tokens), and gives the same ids the server computes, at tiktoken's speed.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

import tiktoken
from jinja2.sandbox import ImmutableSandboxedEnvironment

# GPT-2's pre-tokenizer regex, which tokenizers' ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The same, after a Digits(individual_digits=True) step has isolated every digit. That step cuts the
# text at each digit before GPT-2's regex runs, so whitespace just before a digit ends its piece and
# stays whole ("  1" -> "  ", "1"): hence the \s+(?=\p{N}) alternative.
DIGITS_THEN_GPT2_PATTERN = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""

# Qwen2/2.5's Split regex (tokenizer.json's pre_tokenizer, llama.cpp's "qwen2"), and Llama-3's ("llama-bpe"):
# letters may take one leading non-letter, digits split singly (Qwen) or in threes (Llama-3).
_LETTERS_FIRST = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"""
_REST = r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_PATTERN = _LETTERS_FIRST + r"\p{N}" + _REST
LLAMA3_PATTERN = _LETTERS_FIRST + r"\p{N}{1,3}" + _REST

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TokenizerFormatError(ValueError):
    """The tokenizer cannot be expressed exactly as a tiktoken encoding."""


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in character of each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _pattern(pre_tokenizer: Mapping | None) -> str:
    steps = []
    if pre_tokenizer:
        steps = (
            pre_tokenizer.get("pretokenizers", [pre_tokenizer])
            if pre_tokenizer.get("type") == "Sequence"
            else [pre_tokenizer]
        )
    kinds = [s.get("type") for s in steps]
    if kinds == ["Split", "ByteLevel"]:
        # Split(regex, Isolated) then ByteLevel without its own regex: the Split regex is the whole story
        # (Qwen2/2.5, Llama-3 and most recent byte-level BPE models).
        split, byte_level = steps
        regex = (split.get("pattern") or {}).get("Regex")
        if (
            regex
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and not byte_level.get("use_regex")
        ):
            return str(regex)
        raise TokenizerFormatError(f"unsupported Split pre-tokenizer {split!r} with {byte_level!r}")
    digits = any(s.get("type") == "Digits" and s.get("individual_digits") for s in steps)
    if "ByteLevel" not in kinds or any(k not in ("ByteLevel", "Digits") for k in kinds):
        raise TokenizerFormatError(
            f"unsupported pre-tokenizer sequence {kinds}; need ByteLevel (+ Digits), or Split + ByteLevel"
        )
    return DIGITS_THEN_GPT2_PATTERN if digits else GPT2_PATTERN


def _encoding(name: str, tokens: Mapping[str, int], specials: Mapping[str, int], pattern: str) -> tiktoken.Encoding:
    decoder = _byte_decoder()
    ranks: dict[bytes, int] = {}
    for token, idx in tokens.items():
        if token in specials:
            continue
        try:
            ranks[bytes(decoder[ch] for ch in token)] = idx
        except KeyError as exc:
            raise TokenizerFormatError(f"token {token!r} is not byte-level BPE") from exc
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=dict(specials))


def encoding_from_tokenizer_json(path: Path, name: str = "driftrec") -> tiktoken.Encoding:
    """Build an exact tiktoken encoding from a byte-level BPE tokenizer.json (any HF model of that kind)."""
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise TokenizerFormatError(f"{path}: model type {model.get('type')!r} is not BPE")
    specials = {t["content"]: t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    _check_merge_order(model.get("merges", []), model["vocab"])
    return _encoding(name, model["vocab"], specials, _pattern(spec.get("pre_tokenizer")))


# llama.cpp's tokenizer.ggml.pre names whose regex we can express.
GGUF_PATTERNS = {
    "smollm": DIGITS_THEN_GPT2_PATTERN,
    "gpt-2": GPT2_PATTERN,
    "default": GPT2_PATTERN,
    "qwen2": QWEN2_PATTERN,
    "llama-bpe": LLAMA3_PATTERN,
}


def encoding_from_gguf(path: Path, name: str = "driftrec") -> tiktoken.Encoding:
    """Build the encoding straight from a GGUF's token list (kept in merge order by llama.cpp)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    if fields["tokenizer.ggml.model"].contents() != "gpt2":
        raise TokenizerFormatError(f"{path}: tokenizer is not byte-level BPE")
    pre = fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else "default"
    if pre not in GGUF_PATTERNS:
        raise TokenizerFormatError(f"{path}: unknown pre-tokenizer {pre!r}")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    vocab = {token: idx for idx, token in enumerate(tokens)}
    specials = {token: idx for idx, (token, kind) in enumerate(zip(tokens, types, strict=True)) if kind == 3}
    _check_merge_order(fields["tokenizer.ggml.merges"].contents(), vocab)
    return _encoding(name, vocab, specials, GGUF_PATTERNS[pre])


def _check_merge_order(merges: Iterable, vocab: Mapping[str, int]) -> None:
    """tiktoken merges the pair whose result has the lowest id; that equals BPE only in merge order.

    A token that a later merge makes again is skipped: its first merge fixes its rank in both.
    """
    seen: set[int] = set()
    last = -1
    for i, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        idx = vocab.get(left + right)
        if idx is None:
            raise TokenizerFormatError(f"merge {i} ({left!r}, {right!r}) makes a token not in the vocabulary")
        if idx in seen:
            continue
        if idx < last:
            raise TokenizerFormatError(f"vocabulary is not in merge order at merge {i} ({left!r}, {right!r})")
        seen.add(idx)
        last = idx


def save_encoding(encoding: tiktoken.Encoding, path: Path) -> None:
    """Write ``path`` (.tiktoken ranks) and ``path.json`` (pattern, specials) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        base64.b64encode(token).decode() + " " + str(rank)
        for token, rank in sorted(encoding._mergeable_ranks.items(), key=lambda kv: kv[1])
    ]
    meta = {"name": encoding.name, "pat_str": encoding._pat_str, "special_tokens": encoding._special_tokens}
    for target, text in ((path.with_suffix(".json"), json.dumps(meta)), (path, "\n".join(lines) + "\n")):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)


def load_encoding(path: Path) -> tiktoken.Encoding:
    """Read an encoding written by save_encoding; no network."""
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    ranks = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name=meta["name"],
        pat_str=meta["pat_str"],
        mergeable_ranks=ranks,
        special_tokens=meta["special_tokens"],
    )


def byte_encoding() -> tiktoken.Encoding:
    """One token per byte: an upper bound on any byte-level BPE's count, built with no vocabulary file.
    Scaled by a measured tokens-per-byte ratio it estimates a remote model's counts (see connection.py)."""
    return tiktoken.Encoding(
        name="bytes", pat_str=GPT2_PATTERN, mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={}
    )


@cache
def _template(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


class TokenCounter:
    """Counts tokens of text and of chat prompts as the server will see them.

    ``margin`` > 1 inflates counts when the encoding is only an estimate (a remote model whose
    tokenizer we do not have), so budgets stay on the safe side.
    """

    def __init__(self, encoding: tiktoken.Encoding, chat_template: str | None = None, margin: float = 1.0):
        self.encoding = encoding
        self.chat_template = chat_template or CHATML_TEMPLATE
        self.margin = margin

    def encode(self, text: str) -> list[int]:
        try:
            return self.encoding.encode(text, allowed_special="all")
        except BaseException as exc:  # tiktoken panics (a BaseException) on a byte the vocabulary lacks
            if type(exc).__name__ != "PanicException":
                raise
            return self.encoding.encode(self._encodable(text), allowed_special="all")

    def _encodable(self, text: str) -> str:
        """``text`` with every character the vocabulary cannot encode replaced by U+FFFD.

        Some byte-level vocabularies (SmolLM2's among them) lack a few single bytes (e.g. 0x04, 0xF5-0xFF
        lead bytes), so user text with such characters must still be countable; found by fuzzing."""
        out = []
        for char in text:
            try:
                self.encoding.encode(char, allowed_special="all")
                out.append(char)
            except BaseException as exc:
                if type(exc).__name__ != "PanicException":
                    raise
                out.append("\ufffd")
        return "".join(out)

    def count(self, text: str) -> int:
        return int(len(self.encode(text)) * self.margin + 0.999)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return _template(self.chat_template).render(messages=messages, add_generation_prompt=True)

    def count_messages(self, messages: list[dict[str, str]]) -> int:
        """Tokens of the whole prompt the chat template makes from ``messages``."""
        return self.count(self.render_chat(messages))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that fits in ``max_tokens`` (decoded from whole tokens)."""
        ids = self.encode(text)
        limit = int(max_tokens / self.margin)
        if len(ids) <= limit:
            return text
        return self.encoding.decode(ids[: max(limit, 0)], errors="ignore")
