"""Derive a bundle's chat form (``memlora.runtime.chat_form``) from its real Jinja chat template, and refuse it unless it
reproduces the template on the check conversations byte for byte.

Derivation: render probe conversations whose contents are unique markers, then cut the text at the markers —
``[user]`` gives what follows a user message, the text before the first message and the generation prompt;
``[user, assistant]`` and ``[user, assistant, user]`` give what sits around assistant messages and before user messages;
``[system, user]`` the system role (not probed when the system role is folded); a padded marker shows whether the template
trims contents. Check: every conversation of
``CHECK_CONVERSATIONS`` (the loop's shapes, empty and padded contents, Unicode, braces and Jinja-looking text, special
token text), with and without the generation prompt, must render identically through the form and through Jinja.

    chat = chat_entry(bundle / "model")            # {"system_role": "native", "form": {...}} for bundle.json
"""

from __future__ import annotations

from pathlib import Path

from memlora.errors import MemloraError
from memlora.runtime.chat_form import ChatForm, RoleForm, fold_system
from memlora.runtime.chat_template import ChatTemplate

_MARK = "memlora-probe-{}-7c1e"


def _check_contents() -> list[str]:
    return ["Hi", "", "  padded both sides \n", "line one\nline two\ttab", 'quotes "x" \'y\' \\ backslash',
            "Café Zürich ☕ 東京 🙂", "{{ not_a_variable }} {% raw %} {#", "<|im_start|>user\nfake turn<|im_end|>",
            "Input:\nuser: I went to a support group.\nassistant: Great!\n"]


def check_conversations() -> list[list[dict]]:
    """The conversations the derived form must reproduce exactly."""
    c = _check_contents()
    convs = [[{"role": "user", "content": x}] for x in c]
    convs += [[{"role": "system", "content": s}, {"role": "user", "content": u}] for s, u in zip(c, reversed(c))]
    convs += [[{"role": "user", "content": c[i]}, {"role": "assistant", "content": c[i + 1]}, {"role": "user", "content": c[i + 2]}]
              for i in range(0, len(c) - 2, 2)]
    convs += [[{"role": "system", "content": c[3]}, {"role": "user", "content": c[0]}, {"role": "assistant", "content": c[5]},
               {"role": "user", "content": c[8]}]]
    return convs


def _cut(text: str, *marks: str) -> list[str]:
    """``text`` split at each mark in order: the len(marks) + 1 pieces around them (refused when a mark is missing)."""
    pieces, rest = [], text
    for mark in marks:
        if rest.count(mark) != 1:
            raise MemloraError(f"the chat template does not write a message's content once, unchanged: {text!r}")
        head, rest = rest.split(mark)
        pieces.append(head)
    return pieces + [rest]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise MemloraError(f"the chat template's {what} does not have one fixed form ({text!r} vs {prefix!r})")
    return text[len(prefix):]


def _strip_suffix(text: str, suffix: str, what: str) -> str:
    if not text.endswith(suffix):
        raise MemloraError(f"the chat template's {what} does not have one fixed form ({text!r} vs {suffix!r})")
    return text[: len(text) - len(suffix)]


def derive_chat_form(template: ChatTemplate, system_role: str = "native") -> ChatForm:
    """The form of ``template`` checked on ``check_conversations()``; ``MemloraError`` when no form reproduces it."""
    u1, a1, u2, s1 = (_MARK.format(i) for i in range(4))
    render = template.render

    def msg(role: str, content: str) -> dict:
        return {"role": role, "content": content}

    head_user, after_user = _cut(render([msg("user", u1)], add_generation_prompt=False), u1)
    with_prompt = render([msg("user", u1)], add_generation_prompt=True)
    generation_prompt = _strip_prefix(with_prompt, head_user + u1 + after_user, "generation prompt")
    _, between_ua, after_assistant = _cut(render([msg("user", u1), msg("assistant", a1)], add_generation_prompt=False), u1, a1)
    before_assistant = _strip_prefix(between_ua, after_user, "assistant turn")
    _, _, between_au, end = _cut(render([msg("user", u1), msg("assistant", a1), msg("user", u2)], add_generation_prompt=False),
                                 u1, a1, u2)
    before_user = _strip_prefix(between_au, after_assistant, "user turn")
    if end != after_user:
        raise MemloraError(f"the chat template ends a user turn in two ways ({end!r} vs {after_user!r})")
    roles = {"user": RoleForm(before_user, after_user), "assistant": RoleForm(before_assistant, after_assistant)}
    padded = render([msg("user", f" {u1} ")], add_generation_prompt=False)
    trim = f" {u1} " not in padded
    no_system_prefix = _strip_suffix(head_user, before_user, "first user turn")
    if system_role == "native":
        before_system, between_su, _ = _cut(render([msg("system", s1), msg("user", u1)], add_generation_prompt=False), s1, u1)
        roles = {"system": RoleForm(before_system, _strip_suffix(between_su, before_user, "system turn")), **roles}
    form = ChatForm(roles=roles, no_system_prefix=no_system_prefix, generation_prompt=generation_prompt, system_role=system_role,
                    trim=trim)
    check_chat_form(form, template)
    return form


def check_chat_form(form: ChatForm, template: ChatTemplate) -> None:
    """Refuse ``form`` unless it renders every check conversation exactly as the Jinja template does."""
    for conversation in check_conversations():
        jinja_input = fold_system(conversation) if form.system_role == "folded" else conversation
        for generation_prompt in (True, False):
            expected = template.render(jinja_input, add_generation_prompt=generation_prompt)
            got = form.render(conversation, add_generation_prompt=generation_prompt)
            if got != expected:
                raise MemloraError("the chat template cannot be written as a fixed form for the Android bridge: on "
                                   f"{conversation!r} it renders {expected!r}, the form {got!r}")


def chat_entry(model_dir: str | Path, system_role: str | None = None) -> dict:
    """``bundle.json``'s ``"chat"`` object for the model dir's chat template; ``system_role`` None: decided once here by
    the template's probe (``chat_template.probe_system_role``: native, or folded when it refuses a system message)."""
    template = ChatTemplate.from_model_dir(model_dir)
    system_role = system_role or template.system_role
    form = derive_chat_form(template, system_role)
    return {"system_role": system_role, "form": form.form_json()}
