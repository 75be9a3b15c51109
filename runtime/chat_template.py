"""Render chat messages with a model's chat template exactly as ``transformers`` does, without importing transformers.

Why not ONNX Runtime GenAI's own ``Tokenizer.apply_chat_template``: its C++ template engine is a subset of Jinja (fine for
ChatML, unproven for the long Qwen2.5 / Gemma templates with tools, namespaces and ``raise_exception``), and its ``decode``
stops at the first incomplete UTF-8 sequence, which random-weight models produce all the time. The PyTorch engine and the
ONNX engine must see the SAME token ids for the same messages, so both paths go through the same rules: the template is
rendered with Jinja2 in the sandboxed environment transformers uses (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``,
the ``tojson`` / ``raise_exception`` / ``strftime_now`` helpers, the special tokens as variables, ``None`` fields dropped),
and the text is tokenized with the ``tokenizers`` library from the model's ``tokenizer.json`` (the library transformers'
fast tokenizers wrap), without adding special tokens.

    template = ChatTemplate.from_model_dir(bundle / "model")
    text = template.render([{"role": "user", "content": "Hi"}])     # '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from memlora.errors import MemloraError

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
"""The tokenizer_config.json entries transformers passes to a template as variables (``special_tokens_map``)."""


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": ...} in older tokenizer_config files
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_chat_template(model_dir: str | Path) -> str:
    """The chat template of a model dir: ``chat_template.jinja``, else ``tokenizer_config.json``'s ``chat_template``."""
    model_dir = Path(model_dir)
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config_file = model_dir / "tokenizer_config.json"
    template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template") if config_file.is_file() else None
    if isinstance(template, list):  # named templates: transformers uses "default"
        template = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}.get("default")
    if not isinstance(template, str) or not template:
        raise MemloraError(f"{model_dir} has no chat template (chat_template.jinja or tokenizer_config.json 'chat_template')")
    return template


@dataclass
class ChatTemplate:
    """A compiled chat template plus the special-token variables transformers gives it."""

    source: str
    """The Jinja template text."""
    special_tokens: dict[str, str]
    """``bos_token``, ``eos_token``, ... as strings (absent when the tokenizer has none)."""

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> "ChatTemplate":
        config_file = Path(model_dir) / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        specials = {name: text for name in SPECIAL_TOKEN_NAMES if (text := _token_text(config.get(name))) is not None}
        return cls(read_chat_template(model_dir), specials)

    def __post_init__(self) -> None:
        self._compiled = _compile(self.source)

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True, **variables: Any) -> str:
        """The prompt text of ``messages`` (keys whose value is None are dropped, as transformers does)."""
        import jinja2

        chat = [{k: v for k, v in dict(m).items() if v is not None} for m in messages]
        try:
            return self._compiled.render(
                messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
                **{**self.special_tokens, **variables},
            )
        except jinja2.exceptions.TemplateError as exc:
            raise MemloraError(f"the chat template refused these messages: {exc}") from exc


def _compile(source: str):
    """Compile like ``transformers.utils.chat_template_utils._cached_compile_jinja_template`` (same environment)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    class GenerationTag(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask tag): renders its body unchanged."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = dict
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise MemloraError(f"the chat template does not compile: {exc}") from exc
