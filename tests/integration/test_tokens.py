"""The offline tiktoken encoding gives exactly the token ids of the model's own tokenizer."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer

from driftrec.llm.checkpoint import PreparedModel
from driftrec.llm.tokens import TokenCounter, encoding_from_gguf, load_encoding

FRAGMENTS = [
    "Toy Story (1995)",
    "Star Wars: Episode IV",
    "L'Âge d'or",
    "Amélie",
    "東京物語",
    "Крёстный отец",
    "🎬🍿",
    "it's",
    "they'll",
    "we'd",
    "I'M",
    "1,234.56",
    "2001",
    "  ",
    "\n\n",
    "\t",
    " - ",
    "...",
    "!!!",
    "$19.99",
    "user_42",
    "item-1682",
    '{"label": "A"}',
    "def f(x):\n    return x**2",
    "https://example.org/a?b=c",
    "naïve",
    "coöperate",
    "über",
    "mañana",
    "×÷±",
    "α-β",
    "C++",
    "e-mail",
    "<html>",
    "–",
    "—",
    "“quoted”",
    "Sci-Fi|Thriller",
    "a1b2c3",
    "   trailing",
    "ｆｕｌｌｗｉｄｔｈ",
    "١٢٣",
    "½",
    "Ⅻ",
    "<|im_start|>",
    "<|im_end|>",
]


def varied_strings(n: int = 300, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = list(FRAGMENTS)
    while len(out) < n:
        parts = rng.choices(FRAGMENTS, k=rng.randint(1, 6))
        joiners = [rng.choice(["", " ", "  ", "\n", ", "]) for _ in parts]
        out.append("".join(j + p for j, p in zip(joiners, parts, strict=True)))
    return out


@pytest.fixture(scope="module")
def hf_tokenizer(prepared: PreparedModel) -> Tokenizer:
    return Tokenizer.from_file(str(prepared.checkpoint_dir / "tokenizer.json"))


def test_cached_encoding_matches_the_model_tokenizer(prepared: PreparedModel, hf_tokenizer: Tokenizer) -> None:
    from tests.integration.test_model_families import varied_strings as unicode_strings

    encoding = load_encoding(prepared.encoding_path)
    strings = varied_strings() + unicode_strings(10_000, seed=9)
    mismatches = [
        s
        for s in strings
        if encoding.encode(s, allowed_special="all") != hf_tokenizer.encode(s, add_special_tokens=False).ids
    ]
    assert len(strings) >= 10_000
    assert mismatches == []


def test_digits_are_split_singly_as_smollm2_was_trained(prepared: PreparedModel) -> None:
    encoding = load_encoding(prepared.encoding_path)
    assert [encoding.decode([t]) for t in encoding.encode("in 1995")] == ["in", " ", "1", "9", "9", "5"]


def test_encoding_built_from_the_gguf_is_the_same(prepared: PreparedModel) -> None:
    from_gguf = encoding_from_gguf(prepared.gguf_path)
    from_checkpoint = load_encoding(prepared.encoding_path)
    for text in varied_strings(100, seed=11):
        assert from_gguf.encode(text, allowed_special="all") == from_checkpoint.encode(text, allowed_special="all")


def test_chat_prompt_count_uses_the_models_chat_template(prepared: PreparedModel) -> None:
    counter = prepared.token_counter()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    rendered = counter.render_chat(messages)
    assert rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there")
    assert rendered.endswith("<|im_start|>assistant\n")
    assert counter.count_messages(messages) == len(counter.encode(rendered))


def test_margin_inflates_estimates_and_truncate_respects_it(prepared: PreparedModel) -> None:
    exact = prepared.token_counter()
    padded = TokenCounter(exact.encoding, margin=1.25)
    text = " ".join(FRAGMENTS)
    assert padded.count(text) >= 1.25 * exact.count(text)
    assert padded.count(padded.truncate(text, 40)) <= 40


def test_text_with_bytes_the_vocabulary_lacks_is_still_counted(prepared: PreparedModel) -> None:
    """SmolLM2's byte-level vocabulary has no token for a few single bytes (0x04, 0xF5-0xFF, ...);
    tiktoken panics on them. Found by fuzzing the HTTP service: such text must count, not crash."""
    counter = prepared.token_counter()
    assert counter.count("a\x04b") >= 2
    assert counter.count("x" + chr(0x10FFFF)) >= 1
    assert counter.truncate("\x06 hello " * 100, 10)
