"""Tiny random VLMs (Qwen2.5-VL, InternVL3) in the PyTorch engine, with a per-call peft adapter and images.

- ``memlora make-model --arch ... --size tiny`` builds the real transformers classes, loadable from the dir, deterministic.
- ``TorchVLMEngine`` (prompt + image placeholders expanded by our processor, pixels in the first step, KV cache after)
  gives the SAME tokens as ``PeftModel.generate`` on the same inputs, with the VQA adapter and without it.
- ``Memory.answer`` with an image, or with the image of a retrieved memory, runs the VQA adapter on that image.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from memlora.errors import ImageError
from memlora.runtime.prompts import vqa_messages
from memlora.runtime.torch_vlm_engine import TorchVLMEngine
from memlora.runtime.vision_processor import place_images

ARCHS = ["qwen2_5_vl", "internvl3"]
QUESTION = "What colour is the small square in the top left corner?"


@pytest.fixture(scope="module")
def vlm(tiny_model, vlm_lora, tmp_path_factory):
    cache = {}

    def get(arch):
        if arch not in cache:
            model_dir = tiny_model(arch)
            adapter = vlm_lora(model_dir, tmp_path_factory.mktemp(arch) / "vqa")
            cache[arch] = (model_dir, adapter, TorchVLMEngine(model_dir, adapters={"vqa": adapter}, threads=2))
        return cache[arch]

    return get


@pytest.mark.parametrize("arch, cls", [("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
                                       ("internvl3", "InternVLForConditionalGeneration")])
def test_tiny_vlm_is_the_real_architecture(arch, cls, vlm, vqa_scene):
    from transformers import AutoImageProcessor

    model_dir, _, engine = vlm(arch)
    assert type(engine.model.get_base_model()).__name__ == cls
    assert AutoImageProcessor.from_pretrained(str(model_dir)) is not None
    text_only = engine.generate(vqa_messages(QUESTION), max_new_tokens=1).prompt_tokens
    with_image = engine.generate(vqa_messages(QUESTION), images=[vqa_scene()], max_new_tokens=1).prompt_tokens
    assert with_image - text_only == 16 + 2  # 112x112 -> 16 image tokens + start/end markers


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("adapter", ["vqa", None])
def test_engine_matches_peft_generate(arch, adapter, vlm, vqa_scene):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model_dir, adapter_dir, engine = vlm(arch)
    image = vqa_scene()
    got = engine.generate(vqa_messages(QUESTION), adapter=adapter, images=[image], max_new_tokens=10, min_new_tokens=10)

    reference = AutoModelForImageTextToText.from_pretrained(str(model_dir)).eval()
    if adapter is not None:
        reference = PeftModel.from_pretrained(reference, str(adapter_dir)).eval()
    text = engine.tokenizer.apply_chat_template(place_images(vqa_messages(QUESTION), 1), tokenize=False, add_generation_prompt=True)
    inputs = engine.processor.prepare(text, [image])
    ids = torch.tensor([inputs.input_ids])
    with torch.inference_mode():
        out = reference.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, min_new_tokens=10,
                                 do_sample=False, **engine.vision_kwargs(inputs))
    assert got.token_ids == out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_and_image_change_the_output(arch, vlm, vqa_scene):
    """The comparison above is not vacuous: the adapter and the image each change the first-step logits."""
    _, _, engine = vlm(arch)

    def first_logits(adapter, image):
        engine._call_images = [image]
        engine._reset_rope()
        try:
            ids = engine.render(vqa_messages(QUESTION))
            with torch.inference_mode(), engine._activate(adapter):
                return engine._forward(torch.tensor([ids]), None).logits[0, -1]
        finally:
            engine._call_images, engine._vision = None, None

    base = first_logits(None, vqa_scene(0))
    assert not torch.allclose(base, first_logits("vqa", vqa_scene(0)), atol=1e-4)
    assert not torch.allclose(base, first_logits(None, Image.new("RGB", (112, 112), (255, 255, 255))), atol=1e-6)


def test_memory_answers_about_a_given_or_a_stored_image(vlm, tmp_path, vqa_scene):
    from memlora.runtime.embedder import SentenceTransformerEmbedder
    from memlora.runtime.memory import Memory, MemoryConfig
    from memlora.runtime.store import MemoryStore

    _, _, engine = vlm("qwen2_5_vl")
    embedder = SentenceTransformerEmbedder(threads=1)
    memory = Memory(engine, embedder, MemoryStore(tmp_path, dim=embedder.dim),
                    MemoryConfig(store_dir=str(tmp_path), max_new_tokens={"extraction": 4, "update": 4, "vqa": 6}))
    added = memory.add("Ana: this is the poster from my office", user_id="ana", images=[vqa_scene(1)])
    assert added.image_refs and memory.get_all("ana")[0].image_refs == added.image_refs  # random model: the image note

    stored = memory.answer(QUESTION, "ana", use_stored_image=True)
    given = memory.answer(QUESTION, "ana", image=memory.images.open(added.image_refs[0]))
    assert stored.image_ref == added.image_refs[0]
    assert stored.generation.token_ids == given.generation.token_ids
    direct = engine.generate(vqa_messages(QUESTION), adapter="vqa", images=[vqa_scene(1)], max_new_tokens=6)
    assert stored.generation.token_ids == direct.token_ids  # the VQA adapter ran on the stored image
    with pytest.raises(ImageError, match="no retrieved memory"):
        memory.answer(QUESTION, "nobody", use_stored_image=True)


def test_text_engine_refuses_images(tiny_model, vqa_scene):
    from memlora.runtime.torch_engine import TorchEngine

    with pytest.raises(ImageError, match="text-only"):
        TorchEngine(tiny_model("qwen2")).generate(vqa_messages(QUESTION), images=[vqa_scene()])


def test_make_model_cli_is_deterministic(tiny_model, tmp_path):
    from memlora.cli import cli

    result = CliRunner().invoke(cli, ["make-model", "--arch", "internvl3", "--size", "tiny", "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    digest = lambda d: hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "m") == digest(tiny_model("internvl3"))
    bad = CliRunner().invoke(cli, ["make-model", "--arch", "internvl3", "--size", "qwen2.5-0.5b", "-o", str(tmp_path / "x")])
    assert bad.exit_code != 0
