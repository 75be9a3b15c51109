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

System role: some templates refuse a system message (Gemma-2-it raises "System role not supported"). Whether a template
takes one is decided once per model by rendering a probe (``probe_system_role``): ``"native"`` when the probe renders
with the system text in it, else ``"folded"``. A folded template never sees a system role: ``chat_form.fold_system``
removes the system message and the first user message's content becomes ``system + "\\n\\n" + user``. Every stage
applies the same decision: training and the PyTorch engine through ``apply_chat_template`` (a transformers tokenizer),
the bundle engines through ``ChatTemplate.render``, the Java bridge from the bundle manifest's
``"chat": {"system_role": ...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from memlora.errors import MemloraError
from memlora.runtime.chat_form import SYSTEM_ROLES, fold_system

PROBE_SYSTEM = "memlora-system-probe"
"""The system text of the probe render (any text a template would copy verbatim)."""

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
    system_role: str | None = None
    """``native`` or ``folded`` (see the module doc); None: decided here by ``probe_system_role``."""

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, system_role: str | None = None) -> "ChatTemplate":
        config_file = Path(model_dir) / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        specials = {name: text for name in SPECIAL_TOKEN_NAMES if (text := _token_text(config.get(name))) is not None}
        return cls(read_chat_template(model_dir), specials, system_role)

    def __post_init__(self) -> None:
        self._compiled = _compile(self.source)
        if self.system_role is None:
            self.system_role = probe_system_role(self.source)
        elif self.system_role not in SYSTEM_ROLES:
            raise MemloraError(f"system_role {self.system_role!r} is not one of {SYSTEM_ROLES}")

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True, **variables: Any) -> str:
        """The prompt text of ``messages`` (keys whose value is None are dropped, as transformers does); a system
        message is folded into the first user turn when the template takes none."""
        return self._render(fold_system(messages) if self.system_role == "folded" else messages,
                            add_generation_prompt, **variables)

    def _render(self, messages: Sequence[dict], add_generation_prompt: bool = True, **variables: Any) -> str:
        import jinja2

        chat = [{k: v for k, v in dict(m).items() if v is not None} for m in messages]
        try:
            return self._compiled.render(
                messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
                **{**self.special_tokens, **variables},
            )
        except jinja2.exceptions.TemplateError as exc:
            raise MemloraError(f"the chat template refused these messages: {exc}") from exc


@lru_cache(maxsize=64)
def probe_system_role(source: str) -> str:
    """``native`` when ``source`` renders a system message with its text in the prompt, else ``folded`` (the template
    raises on it, as Gemma-2-it's does, or drops it). Raises ``MemloraError`` when it cannot render even the folded form."""
    # every special token defined (empty), so a template that concatenates bos_token renders
    template = ChatTemplate(source, dict.fromkeys(SPECIAL_TOKEN_NAMES, ""), system_role="native")
    probe = [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": "hello"}]
    try:
        if PROBE_SYSTEM in template._render(probe):
            return "native"
    except MemloraError:
        pass
    template._render(fold_system(probe))  # a template that takes neither form is unusable: say so now
    return "folded"


def apply_chat_template(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """``tokenizer.apply_chat_template(..., tokenize=False)`` with the system message folded when the tokenizer's
    template takes none: what training and the PyTorch engine feed the model."""
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, str) and probe_system_role(source) == "folded":
        messages = fold_system(messages)
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


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
