"""The chat template as plain strings (``bundle.json`` ``"chat"``), so a runtime without Jinja renders the same bytes.

A bundle's prompts are rendered with the model's Jinja chat template (``chat_template.py``). The Android bridge has no
Jinja engine, so the export also writes the template's *form*: what the template puts around each message of each role,
what it puts before the first message when that is not a system message (a default system message, a BOS token), and the
generation prompt. The form is derived from the real template and refused unless it reproduces the Jinja rendering of a
set of check conversations byte for byte (``memlora.export.chat_form``). Both runtimes render with the same rules:

    text = (no_system_prefix if messages[0] is not a system message else "")
         + concat(roles[m.role].before + content(m) + roles[m.role].after for m in messages)
         + (generation_prompt if add_generation_prompt else "")

where ``content(m)`` is ``m.content.strip()`` when the form says ``"trim": true`` (templates that write ``content | trim``)
and ``m.content`` otherwise.

``system_role`` "folded" (a template without a system role): before rendering, the system message is removed and the
first user message's content becomes ``system_content + "\\n\\n" + user_content`` (``fold_system``).

    "chat": {"system_role": "native",
             "form": {"roles": {"system": {"before": "<|im_start|>system\\n", "after": "<|im_end|>\\n"}, ...},
                      "no_system_prefix": "", "generation_prompt": "<|im_start|>assistant\\n", "trim": false}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memlora.errors import BundleError, MemloraError

SYSTEM_ROLES = ("native", "folded")
"""``chat.system_role``: the template takes a system message ("native") or the runtime folds it into the first user
message ("folded")."""
FOLD_SEPARATOR = "\n\n"
"""Between the system content and the first user message's content when the system message is folded."""


def fold_system(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The messages with the system message folded into the first user message (no system message: unchanged)."""
    out = [dict(m) for m in messages]
    systems = [i for i, m in enumerate(out) if m.get("role") == "system"]
    if not systems:
        return out
    if systems != [0]:
        raise MemloraError("a folded system message must be the first message, and only one")
    users = [i for i, m in enumerate(out) if m.get("role") == "user"]
    if not users:
        raise MemloraError("a folded system message needs a user message to fold into")
    system = out.pop(0)
    first = users[0] - 1
    out[first]["content"] = f"{system['content']}{FOLD_SEPARATOR}{out[first]['content']}"
    return out


@dataclass(frozen=True)
class RoleForm:
    """What the template writes around one message's content."""

    before: str
    after: str


@dataclass(frozen=True)
class ChatForm:
    """A chat template reduced to strings (see the module doc); ``render`` is the Java bridge's ``ChatForm.render``."""

    roles: dict[str, RoleForm]
    """Role -> its before/after strings (no "system" when the system role is folded)."""
    no_system_prefix: str
    """Written before the first message when it is not a system message."""
    generation_prompt: str
    """Appended with ``add_generation_prompt``."""
    system_role: str = "native"
    """"native" or "folded" (``SYSTEM_ROLES``)."""
    trim: bool = False
    """The template strips each content (Jinja's ``| trim``: Python's ``str.strip()``) before writing it."""

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        if self.system_role == "folded":
            messages = fold_system(messages)
        if not messages:
            raise MemloraError("cannot render an empty conversation")
        parts = [] if messages[0].get("role") == "system" else [self.no_system_prefix]
        for i, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if role not in self.roles:
                raise MemloraError(f"message {i} has role {role!r}; the chat form has {', '.join(self.roles)}")
            if not isinstance(content, str):
                raise MemloraError(f"message {i} content must be a string, got {type(content).__name__}")
            parts += [self.roles[role].before, content.strip() if self.trim else content, self.roles[role].after]
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)

    def form_json(self) -> dict:
        """``bundle.json`` ``chat.form``."""
        return {"roles": {r: {"before": f.before, "after": f.after} for r, f in self.roles.items()},
                "no_system_prefix": self.no_system_prefix, "generation_prompt": self.generation_prompt, "trim": self.trim}

    @classmethod
    def from_chat_json(cls, chat: object, where: str = "bundle.json") -> ChatForm:
        """The form of a manifest's ``"chat"`` object; ``BundleError`` when it is missing or malformed."""
        if not isinstance(chat, dict) or not isinstance(chat.get("form"), dict):
            raise BundleError(f"{where}: no chat form ('chat': {{'form': ...}}); re-export the bundle with this memlora")
        form, system_role = chat["form"], chat.get("system_role", "native")
        if system_role not in SYSTEM_ROLES:
            raise BundleError(f"{where}: chat system_role {system_role!r} is not one of {SYSTEM_ROLES}")

        def text(mapping: object, key: str, what: str) -> str:
            value = mapping.get(key) if isinstance(mapping, dict) else None
            if not isinstance(value, str):
                raise BundleError(f"{where}: chat form {what} {key!r} must be a string")
            return value

        trim = form.get("trim", False)
        if not isinstance(trim, bool):
            raise BundleError(f"{where}: chat form 'trim' must be true or false")
        roles = form.get("roles")
        if not isinstance(roles, dict) or not {"user", "assistant"} <= set(roles):
            raise BundleError(f"{where}: chat form 'roles' must give at least 'user' and 'assistant'")
        return cls(
            roles={str(r): RoleForm(text(v, "before", f"role {r!r}"), text(v, "after", f"role {r!r}")) for r, v in roles.items()},
            no_system_prefix=text(form, "no_system_prefix", "field"),
            generation_prompt=text(form, "generation_prompt", "field"),
            system_role=system_role,
            trim=trim,
        )
