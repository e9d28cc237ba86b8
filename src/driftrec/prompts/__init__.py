"""Prompt templates as files, rendered within a token budget.

A template is a TOML file in ``prompts/templates/``: a name, a version (recorded with every result
that used it), a system message, and the user message as ordered sections. Each section is a Jinja2
snippet with a priority; when the rendered prompt is longer than the budget, the lowest-priority
sections are truncated or dropped first, and a section marked ``required`` is never touched (if the
prompt cannot fit without cutting it, rendering fails with PromptTooLong). Sections come in the order
written, so templates put the stable parts first and vLLM's prefix cache is reused across calls.
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, Field, ValidationError

from driftrec.llm.tokens import TokenCounter

_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
)


def as_data(value: object) -> str:
    """Catalog or user text as one quoted, escaped string (JSON string syntax), the ``data`` filter.

    Text from outside (titles, free text, queries, profile names, summaries) cannot close its quotes,
    start a new line that poses as a candidate or a heading, or read as part of the instructions: every
    system message says quoted text is data. Numbers, labels and the templates' own words stay bare."""
    return json.dumps(str(value), ensure_ascii=False)


_ENV.filters["data"] = as_data


@contextlib.contextmanager
def unquoted_data() -> Iterator[None]:
    """Render outside text as is, unquoted (driftrec before the ``data`` filter): only for measuring what
    quoting buys (eval's injection study). Not thread-safe; never in serving."""
    _ENV.filters["data"] = str
    try:
        yield
    finally:
        _ENV.filters["data"] = as_data


class PromptError(ValueError):
    """A template file is malformed, or rendering it failed."""


class PromptTooLong(PromptError):
    """Even with every optional section trimmed, the prompt does not fit the budget."""


class Section(BaseModel):
    name: str
    text: str
    priority: int = Field(default=50, description="Higher survives longer when trimming.")
    trim: Literal["truncate", "drop", "required"] = "drop"


class PromptTemplate(BaseModel):
    name: str
    version: int = Field(ge=1)
    description: str = ""
    system: str
    sections: list[Section]

    @property
    def id(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass
class RenderedPrompt:
    template: str
    version: int
    messages: list[dict[str, str]]
    tokens: int
    trimmed: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.template}@v{self.version}"


TEMPLATE_DIR = Path(str(resources.files("driftrec.prompts") / "templates"))


@cache
def load_template(name: str, directory: Path | None = None) -> PromptTemplate:
    """Load ``<name>.toml`` from the packaged templates (or ``directory``)."""
    path = (directory or TEMPLATE_DIR) / f"{name}.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return PromptTemplate.model_validate(raw)
    except FileNotFoundError:
        raise PromptError(f"no prompt template {name!r} in {path.parent}") from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise PromptError(f"{path}: {exc}") from exc


def available_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.toml"))


def _render(source: str, variables: dict[str, Any], where: str) -> str:
    try:
        return _ENV.from_string(source).render(**variables).strip()
    except TemplateError as exc:
        raise PromptError(f"{where}: {exc}") from exc


def render(
    template: PromptTemplate | str,
    variables: dict[str, Any],
    *,
    counter: TokenCounter,
    budget: int,
) -> RenderedPrompt:
    """Render ``template`` and trim it to at most ``budget`` prompt tokens (chat template included)."""
    tpl = load_template(template) if isinstance(template, str) else template
    system = _render(tpl.system, variables, f"{tpl.id} system")
    texts = {s.name: _render(s.text, variables, f"{tpl.id} section {s.name}") for s in tpl.sections}

    def messages() -> list[dict[str, str]]:
        user = "\n\n".join(texts[s.name] for s in tpl.sections if texts[s.name])
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    trimmed: list[str] = []
    tokens = counter.count_messages(messages())
    for section in sorted((s for s in tpl.sections if s.trim != "required"), key=lambda s: s.priority):
        if tokens <= budget:
            break
        if not texts[section.name]:
            continue
        over = tokens - budget
        if section.trim == "truncate":
            keep = counter.count(texts[section.name]) - over - 4
            texts[section.name] = counter.truncate(texts[section.name], keep).rstrip() + " …" if keep > 8 else ""
        else:
            texts[section.name] = ""
        trimmed.append(section.name)
        tokens = counter.count_messages(messages())
    if tokens > budget:
        raise PromptTooLong(f"{tpl.id}: {tokens} tokens with every optional section trimmed; budget is {budget}")
    return RenderedPrompt(tpl.name, tpl.version, messages(), tokens, trimmed)
