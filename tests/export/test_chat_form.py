"""The chat form written into bundle.json: derived from the real Jinja template, checked byte for byte, refused when no
fixed form reproduces the template; the fold of a system message (``chat.system_role`` "folded")."""

from __future__ import annotations

import pytest

from memlora.errors import BundleError, MemloraError
from memlora.export.chat_form import chat_entry, check_conversations, derive_chat_form
from memlora.runtime.chat_form import ChatForm, fold_system
from memlora.runtime.chat_template import ChatTemplate

DEFAULT_SYSTEM = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are SmolLM<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_tiny_model_form_is_chatml(tiny_model):
    chat = chat_entry(tiny_model("qwen2"))
    assert chat["system_role"] == "native"
    form = ChatForm.from_chat_json(chat)
    assert form.render([{"role": "user", "content": "Hi"}]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_default_system_message_is_the_no_system_prefix():
    template = ChatTemplate(DEFAULT_SYSTEM, {})
    form = derive_chat_form(template)
    assert form.no_system_prefix == "<|im_start|>system\nYou are SmolLM<|im_end|>\n"
    for conversation in check_conversations():
        assert form.render(conversation) == template.render(conversation)


@pytest.mark.parametrize("source", [
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}\n{% endfor %}",          # changes the content
    "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
    "{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}",                   # writes it twice
    "{% for m in messages %}[{{ m['content'] | length }}]{{ m['content'] }}{% endfor %}",          # depends on it
])
def test_a_template_without_a_fixed_form_is_refused(source):
    with pytest.raises(MemloraError, match="chat template"):
        derive_chat_form(ChatTemplate(source, {}))


def test_fold_puts_the_system_content_before_the_first_user_message():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert fold_system(messages) == [{"role": "user", "content": "S\n\nU"}, {"role": "assistant", "content": "A"}]
    assert fold_system(messages[1:]) == messages[1:]
    with pytest.raises(MemloraError, match="needs a user message"):
        fold_system(messages[:1])


def test_folded_form_renders_the_folded_jinja_text():
    source = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
              "{% for m in messages %}<turn>{{ m['role'] }}\n{{ m['content'] | trim }}</turn>\n{% endfor %}"
              "{% if add_generation_prompt %}<turn>model\n{% endif %}")
    template = ChatTemplate(source, {"bos_token": "<bos>"})
    with pytest.raises(MemloraError):
        derive_chat_form(template, "native")   # the system probe raises: such templates need the fold
    form = derive_chat_form(template, "folded")
    assert form.trim and "system" not in form.roles
    messages = [{"role": "system", "content": " S "}, {"role": "user", "content": "U"}]
    assert form.render(messages) == template.render(fold_system(messages)) == "<bos><turn>user\nS \n\nU</turn>\n<turn>model\n"


@pytest.mark.parametrize("chat", [None, {}, {"form": None}, {"form": {"roles": {}}}, {"system_role": "x", "form": {}}])
def test_missing_or_malformed_chat_is_a_bundle_error(chat):
    with pytest.raises(BundleError):
        ChatForm.from_chat_json(chat)
