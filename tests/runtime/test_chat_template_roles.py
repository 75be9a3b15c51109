"""The system role on real chat templates (SmolLM2-Instruct, Qwen2.5-Instruct, Llama-3.2-Instruct, Gemma-2-it; the
strings are the models' published templates, see templates/SOURCES.md): Gemma's refuses a system role, so it is folded
into the first user turn, byte-exact; the others keep it. Training, the PyTorch path and the bundle path agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memlora.errors import MemloraError
from memlora.runtime.chat_template import ChatTemplate, apply_chat_template, fold_system, probe_system_role

TEMPLATES = Path(__file__).parent / "templates"
SYSTEM, USER = "Extract the facts as JSON.", "Input:\nuser: I moved to Lisbon."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
CHATML = ("<|im_start|>system\nExtract the facts as JSON.<|im_end|>\n"
          "<|im_start|>user\nInput:\nuser: I moved to Lisbon.<|im_end|>\n<|im_start|>assistant\n")


def template(name: str, **specials) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"), specials)


def test_gemma_folds_and_never_sees_a_system_role():
    gemma = template("gemma-2-it", bos_token="<bos>")
    assert gemma.system_role == "folded"
    with pytest.raises(MemloraError, match="System role not supported"):  # the real template refuses it
        gemma._render(MESSAGES)
    expected = ("<bos><start_of_turn>user\nExtract the facts as JSON.\n\nInput:\nuser: I moved to Lisbon.<end_of_turn>\n"
                "<start_of_turn>model\n")
    assert gemma.render(MESSAGES) == expected
    with pytest.raises(MemloraError, match="needs a user message"):  # nothing to fold into
        gemma.render(MESSAGES[:1])


@pytest.mark.parametrize("name, expected", [
    ("smollm2-instruct", CHATML),
    ("qwen2.5-instruct", CHATML),
    ("llama-3.2-instruct", ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
                           "Today Date: 26 Jul 2024\n\nExtract the facts as JSON.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                           "Input:\nuser: I moved to Lisbon.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")),
])
def test_native_templates_keep_the_system_role(name, expected):
    chat = template(name, bos_token="<|begin_of_text|>")
    assert chat.system_role == "native"
    assert chat.render(MESSAGES, date_string="26 Jul 2024") == expected


def test_fold_rule():
    assert fold_system([{"role": "user", "content": "u"}]) == [{"role": "user", "content": "u"}]
    folded = fold_system([{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                          {"role": "assistant", "content": "a"}, {"role": "user", "content": "u2"}])
    assert folded == [{"role": "user", "content": "s\n\nu1"}, {"role": "assistant", "content": "a"},
                      {"role": "user", "content": "u2"}]
    with pytest.raises(MemloraError, match="first message, and only one"):
        fold_system([{"role": "user", "content": "u"}, {"role": "system", "content": "s"}])
    original = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    fold_system(original)
    assert original[1]["content"] == "u"  # the caller's messages are not changed


def test_probe_defines_special_tokens():
    """A template that concatenates ``bos_token`` (undefined would raise) is probed as native, not refused."""
    source = "{{ bos_token + messages[0]['content'] }}{% for m in messages[1:] %}|{{ m['content'] }}{% endfor %}"
    assert probe_system_role(source) == "native"


def test_a_template_that_takes_neither_form_is_refused():
    with pytest.raises(MemloraError, match="refused"):
        probe_system_role("{{ raise_exception('no chat at all') }}")
    with pytest.raises(MemloraError, match="system_role"):
        ChatTemplate("{{ messages }}", {}, system_role="maybe")


@pytest.mark.parametrize("name", ["gemma-2-it", "qwen2.5-instruct"])
def test_training_torch_and_bundle_paths_render_the_same_prompt(tiny_model, tmp_path, name):
    """A transformers tokenizer carrying the real template (the project's own tiny tokenizer) renders through
    ``apply_chat_template`` (training, TorchEngine) exactly what ``ChatTemplate`` renders (bundle engines)."""
    from transformers import AutoTokenizer

    from memlora.corpus.dataset import render_prompt

    source = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model("qwen2")))
    tokenizer.chat_template = source
    tokenizer.save_pretrained(str(tmp_path))
    bundle_side = ChatTemplate.from_model_dir(tmp_path)
    assert bundle_side.render(MESSAGES) == apply_chat_template(tokenizer, MESSAGES) == render_prompt(tokenizer, MESSAGES)
    assert (SYSTEM in bundle_side.render(MESSAGES)) and ("<start_of_turn>system" not in bundle_side.render(MESSAGES))


def test_bundle_manifest_chat_section(tmp_path):
    """``chat.system_role`` is read from bundle.json; a bundle without it stays loadable and probes at load; a bad value
    is refused."""
    from memlora.errors import BundleError
    from memlora.runtime.bundle import _system_role

    assert _system_role({}, "b") is None
    assert _system_role({"chat": {"system_role": "folded", "form": "x"}}, "b") == "folded"
    with pytest.raises(BundleError, match="system_role"):
        _system_role({"chat": {"system_role": "sometimes"}}, "b")
    with pytest.raises(BundleError, match="chat"):
        _system_role({"chat": json.dumps({})}, "b")
