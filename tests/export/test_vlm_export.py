"""VLM bundle (tiny Qwen2.5-VL): ``export_bundle`` writes the multi-LoRA text decoder (``exclude_embeds``), the vision encoder
and the text embedding (torch.onnx) and the processor config; ``OrtGenAIEngine`` answers VQA from it on onnxruntime.

- parity: with the VQA adapter and an image, the bundle's greedy tokens equal ``TorchVLMEngine``'s token for token and the
  per-step logits agree (fp32); the same without the adapter and without the image;
- not vacuous: the adapter changes the tokens, the image changes the logits;
- the 3-D mRoPE positions equal transformers' ``get_rope_index``;
- what the route cannot do is refused clearly (InternVL3, merged experts, a text bundle given images).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memlora.errors import BundleError, MemloraError
from memlora.runtime.prompts import vqa_messages

QUESTION = "What colour is the small square in the top left corner?"
STEPS = 10


def scene(seed: int = 0):
    from memlora.distill.vqa_data import VQABenchmarkConfig, generate_split

    return generate_split("test", 2, VQABenchmarkConfig(seed=seed, types=("colour",)))[0].image


def vqa_lora(model_dir, out_dir, seed=7):
    """A peft LoRA (r8, random non-zero A and B) on every projection of the language model only."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from memlora.distill.vqa_train import VisionExampleEncoder

    base = AutoModelForImageTextToText.from_pretrained(str(model_dir))
    targets = VisionExampleEncoder(model_dir).language_model_targets(base, "all-linear")
    torch.manual_seed(seed)
    get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)).save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="module")
def vlm_bundle(tiny_model, tmp_path_factory):
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.runtime.ort_engine import OrtGenAIEngine
    from memlora.runtime.torch_vlm_engine import TorchVLMEngine

    torch.set_num_threads(2)
    base = tiny_model("qwen2_5_vl")
    out = tmp_path_factory.mktemp("vlm_out")
    vqa_lora(base, out / "vqa")
    bundle = export_bundle(ExportConfig(base=base, output=tmp_path_factory.mktemp("vlm") / "bundle", adapters=out, quiet=True))
    return {
        "base": base, "out": out, "bundle": bundle,
        "ort": OrtGenAIEngine(bundle, threads=2),
        "torch": TorchVLMEngine(base, adapters={"vqa": out / "vqa"}, threads=2),
    }


def test_bundle_layout(vlm_bundle):
    from memlora.runtime.bundle import load_bundle

    bundle = load_bundle(vlm_bundle["bundle"])
    assert bundle.vision is not None and bundle.vision.image_tokens == 16 and bundle.vision.image_side == 112
    assert bundle.experts["vqa"].mode == "externalized"
    genai = json.loads((bundle.base_dir / "genai_config.json").read_text())["model"]["decoder"]["inputs"]
    assert "inputs_embeds" in genai and "input_ids" not in genai
    for name in ("vision.onnx", "embedding.onnx", "preprocessor_config.json", "config.json", "tokenizer.json"):
        assert (bundle.vision.processor_dir / name).is_file(), name


def _reference_logits(vlm_bundle, adapter, images, generated):
    """transformers (+ peft) logits of the prompt + the generated tokens in one forward (teacher forcing)."""
    engine = vlm_bundle["torch"]
    engine._call_images = list(images) or None
    engine._reset_rope()
    try:
        ids = engine.render(vqa_messages(QUESTION))
        vision = engine._vision
        full = torch.tensor([ids + generated[:-1]])
        extra = {}
        if vision is not None:
            extra = engine.vision_kwargs(vision)
            extra["mm_token_type_ids"] = torch.tensor([vision.mm_token_type_ids + [0] * (len(generated) - 1)], dtype=torch.int32)
        with torch.inference_mode(), engine._activate(adapter):
            lm = engine.model.get_base_model()
            logits = lm(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False, **extra).logits
        return logits[0, len(ids) - 1:].numpy()
    finally:
        engine._call_images, engine._vision = None, None
        engine._reset_rope()


@pytest.mark.parametrize("adapter, with_image", [("vqa", True), (None, True), ("vqa", False)])
def test_bundle_matches_torch_token_for_token(vlm_bundle, adapter, with_image):
    images = [scene()] if with_image else []
    ort_engine, torch_engine = vlm_bundle["ort"], vlm_bundle["torch"]
    got = ort_engine.generate(vqa_messages(QUESTION), adapter=adapter, images=images, max_new_tokens=STEPS,
                              min_new_tokens=STEPS, keep_logits=True)
    want = torch_engine.generate(vqa_messages(QUESTION), adapter=adapter, images=images, max_new_tokens=STEPS,
                                 min_new_tokens=STEPS)
    assert got.prompt_tokens == want.prompt_tokens == (83 if with_image else 65)
    assert len(got.token_ids) == STEPS
    assert got.token_ids == want.token_ids
    reference = _reference_logits(vlm_bundle, adapter, images, got.token_ids)
    assert np.abs(ort_engine.vision_engine.last_logits - reference).max() < 1e-4


def test_adapter_and_image_change_the_bundle_output(vlm_bundle):
    engine = vlm_bundle["ort"]
    image = scene()
    with_adapter = engine.generate(vqa_messages(QUESTION), adapter="vqa", images=[image], max_new_tokens=STEPS,
                                   min_new_tokens=STEPS, keep_logits=True)
    adapter_logits = engine.vision_engine.last_logits[0]
    without = engine.generate(vqa_messages(QUESTION), adapter=None, images=[image], max_new_tokens=STEPS,
                              min_new_tokens=STEPS, keep_logits=True)
    base_logits = engine.vision_engine.last_logits[0]
    assert with_adapter.token_ids != without.token_ids  # the VQA adapter provably applies in the bundle
    assert np.abs(adapter_logits - base_logits).max() > 1e-2
    from PIL import Image

    engine.generate(vqa_messages(QUESTION), images=[Image.new("RGB", (112, 112), (255, 255, 255))], max_new_tokens=1,
                    keep_logits=True)
    assert np.abs(engine.vision_engine.last_logits[0] - base_logits).max() > 1e-6  # the pixels reach the decoder


def test_non_square_image_is_resized_to_the_encoder_size(vlm_bundle):
    engine = vlm_bundle["ort"]
    wide = scene().resize((224, 112))
    got = engine.generate(vqa_messages(QUESTION), adapter="vqa", images=[wide], max_new_tokens=2)
    assert got.prompt_tokens == 83
    square = engine.generate(vqa_messages(QUESTION), adapter="vqa", images=[wide.resize((112, 112))], max_new_tokens=2)
    assert got.token_ids == square.token_ids


def test_mrope_positions_match_transformers(vlm_bundle):
    from transformers import AutoModelForImageTextToText

    from memlora.runtime.ort_vlm_engine import mrope_position_ids

    engine = vlm_bundle["torch"]
    engine._call_images = [scene(), scene(1)]
    try:
        ids = engine.render([{"role": "user", "content": "compare these two"}])
        vision = engine._vision
    finally:
        engine._call_images, engine._vision = None, None
    model = AutoModelForImageTextToText.from_pretrained(str(vlm_bundle["base"])).model
    want, delta = model.get_rope_index(torch.tensor([ids]), torch.tensor([vision.mm_token_type_ids]),
                                       image_grid_thw=torch.from_numpy(vision.image_grid_thw))
    got, got_delta = mrope_position_ids(ids, vision.image_token_id, vision.image_grid_thw, 2)
    assert np.array_equal(got, want[:, 0].numpy()) and got_delta == int(delta)
    assert not np.array_equal(got[0], got[1])  # truly 3-D: the image block differs per axis


def test_unsupported_vlm_routes_are_refused(vlm_bundle, tiny_model, tmp_path):
    from memlora.export.compiler import ExportConfig, export_bundle

    with pytest.raises(MemloraError, match="internvl"):
        export_bundle(ExportConfig(base=tiny_model("internvl3"), output=tmp_path / "b1", quiet=True))
    with pytest.raises(MemloraError, match="runtime adapters only"):
        export_bundle(ExportConfig(base=vlm_bundle["base"], output=tmp_path / "b2", adapters=vlm_bundle["out"], mode="merge",
                                   quiet=True))
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()
    with pytest.raises(BundleError, match="not a vision-language bundle"):
        from memlora.runtime.ort_vlm_engine import OrtVLMEngine

        text_bundle = tmp_path / "text"
        text_bundle.mkdir()
        (text_bundle / "bundle.json").write_text(json.dumps({"format_version": 1, "base": {"precision": "fp32", "dir": "m"},
                                                             "experts": {}, "files": {"m/genai_config.json": {"size": 2, "sha256": ""}}}))
        (text_bundle / "m").mkdir()
        (text_bundle / "m" / "genai_config.json").write_text("{}")
        OrtVLMEngine(text_bundle, verify=False)


def test_vqa_bench_command_runs_on_the_bundle(vlm_bundle, tmp_path):
    from click.testing import CliRunner

    from memlora.bench.vqa_eval import vqa_command
    from memlora.distill.vqa_data import VQABenchmarkConfig, write_vqa_benchmark

    write_vqa_benchmark(tmp_path / "DATA", VQABenchmarkConfig(train=3, val=1, test=3))
    result = CliRunner().invoke(vqa_command, ["--bundle", str(vlm_bundle["bundle"]), "--data", str(tmp_path / "DATA"),
                                              "--route", "image", "--json-out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["adapter"] == "vqa" and report["reports"][0]["n"] == 3
    from memlora.distill.dataset import load_examples, stage_path

    example = load_examples(stage_path(tmp_path / "DATA", "test", "vqa"))[0]  # the bench ran the bundle's VQA expert:
    want = vlm_bundle["torch"].generate(example["messages"], adapter="vqa", images=example["images"], max_new_tokens=48)
    assert report["reports"][0]["outputs"][0]["text"] == want.text  # the same text as PyTorch on the same example
