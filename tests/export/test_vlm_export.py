"""VLM bundles (tiny Qwen2.5-VL and tiny InternVL3): ``export_bundle`` writes the multi-LoRA text decoder (``exclude_embeds``;
InternVL's Qwen2 language model extracted first), the vision encoder and the text embedding (torch.onnx) and the processor
config; ``OrtGenAIEngine`` answers VQA from it on onnxruntime.

- parity, both archs: with the VQA adapter and an image, the bundle's greedy tokens equal ``TorchVLMEngine``'s token for
  token and the per-step logits agree (fp32); the same without the adapter and without the image;
- not vacuous: the adapter changes the tokens, the image changes the logits (both archs);
- the 3-D mRoPE positions equal transformers' ``get_rope_index``;
- what the route cannot do is refused clearly (another InternVL language model, merged experts, a text bundle given images).
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
ARCHS = ("qwen2_5_vl", "internvl3")


@pytest.fixture(scope="module")
def vlm_bundles(tiny_model, vlm_lora, tmp_path_factory):
    """Factory: ``vlm_bundles(arch)`` -> {base, out (with a random vqa expert), bundle, ort engine, torch engine}, built once."""
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.runtime.ort_engine import OrtGenAIEngine
    from memlora.runtime.torch_vlm_engine import TorchVLMEngine

    torch.set_num_threads(1)
    cache: dict[str, dict] = {}

    def get(arch: str) -> dict:
        if arch not in cache:
            base = tiny_model(arch)
            out = tmp_path_factory.mktemp(f"vlm_out_{arch}")
            vlm_lora(base, out / "vqa")
            bundle = export_bundle(ExportConfig(base=base, output=tmp_path_factory.mktemp(f"vlm_{arch}") / "bundle", adapters=out,
                                                quiet=True))
            cache[arch] = {
                "base": base, "out": out, "bundle": bundle,
                "ort": OrtGenAIEngine(bundle, threads=1),
                "torch": TorchVLMEngine(base, adapters={"vqa": out / "vqa"}, threads=1),
            }
        return cache[arch]

    return get


@pytest.fixture(scope="module")
def vlm_bundle(vlm_bundles):
    return vlm_bundles("qwen2_5_vl")


@pytest.mark.parametrize("arch", ARCHS)
def test_bundle_layout(vlm_bundles, arch):
    from memlora.runtime.bundle import load_bundle

    bundle = load_bundle(vlm_bundles(arch)["bundle"])
    assert bundle.vision is not None and bundle.vision.image_tokens == 16 and bundle.vision.image_side == 112
    assert bundle.experts["vqa"].mode == "externalized"
    genai = json.loads((bundle.base_dir / "genai_config.json").read_text())["model"]["decoder"]["inputs"]
    assert "inputs_embeds" in genai and "input_ids" not in genai
    if arch == "internvl3":  # the extracted Qwen2 decoder: 1-D positions computed inside the graph, no image grid
        assert "position_ids" not in genai and bundle.vision.raw["position_ids"] == "1d" and bundle.vision.raw["grid_thw"] is None
    else:
        assert "position_ids" in genai and bundle.vision.raw["position_ids"] == "mrope-3d"
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
            if vision.image_grid_thw is not None:  # Qwen2.5-VL's mRoPE needs the image token types of the whole sequence
                extra["mm_token_type_ids"] = torch.tensor([vision.mm_token_type_ids + [0] * (len(generated) - 1)], dtype=torch.int32)
        with torch.inference_mode(), engine._activate(adapter):
            lm = engine.model.get_base_model()
            logits = lm(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False, **extra).logits
        return logits[0, len(ids) - 1:].numpy()
    finally:
        engine._call_images, engine._vision = None, None
        engine._reset_rope()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("adapter, with_image", [("vqa", True), (None, True), ("vqa", False)])
def test_bundle_matches_torch_token_for_token(vlm_bundles, arch, adapter, with_image, vqa_scene):
    vlm_bundle = vlm_bundles(arch)
    images = [vqa_scene()] if with_image else []
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


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_and_image_change_the_bundle_output(vlm_bundles, arch, vqa_scene):
    engine = vlm_bundles(arch)["ort"]
    image = vqa_scene()
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


def test_non_square_image_is_resized_to_the_encoder_size(vlm_bundle, vqa_scene):
    engine = vlm_bundle["ort"]
    wide = vqa_scene().resize((224, 112))
    got = engine.generate(vqa_messages(QUESTION), adapter="vqa", images=[wide], max_new_tokens=2)
    assert got.prompt_tokens == 83
    square = engine.generate(vqa_messages(QUESTION), adapter="vqa", images=[wide.resize((112, 112))], max_new_tokens=2)
    assert got.token_ids == square.token_ids


def test_mrope_positions_match_transformers(vlm_bundle, vqa_scene):
    from transformers import AutoModelForImageTextToText

    from memlora.runtime.ort_vlm_engine import mrope_position_ids

    engine = vlm_bundle["torch"]
    engine._call_images = [vqa_scene(), vqa_scene(1)]
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
    import shutil

    from memlora.export.compiler import ExportConfig, export_bundle

    other = shutil.copytree(tiny_model("internvl3"), tmp_path / "internvl-llama")  # an InternVL whose LM is not a Qwen2
    config = json.loads((other / "config.json").read_text())
    config["text_config"]["model_type"] = "llama"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(MemloraError, match="InternVL with a 'llama' language model"):
        export_bundle(ExportConfig(base=other, output=tmp_path / "b1", quiet=True))
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


def test_vqa_bench_runs_the_bundle_beside_pytorch(vlm_bundle, tmp_path):
    """``memlora eval --vqa`` (and ``memlora-bench --vqa``) on the bundle and the PyTorch engine side by side: the bundle
    answers with its VQA expert, with the same text as PyTorch on every question, scored the same way."""
    from click.testing import CliRunner

    from memlora.bench.cli import bench_command
    from memlora.cli import cli

    runner = CliRunner()
    args = ["--model", str(vlm_bundle["base"]), "--adapters", str(vlm_bundle["out"]), "--bundle", str(vlm_bundle["bundle"]),
            "--threads", "1", "--quiet"]
    result = runner.invoke(cli, ["eval", "--vqa", "--limit", "3", "--json", str(tmp_path / "eval.json"), *args])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    torch_run, bundle_run = report["runs"]
    assert (torch_run["engine"], bundle_run["engine"]) == ("pytorch", "bundle")
    assert torch_run["adapter"] == bundle_run["adapter"] == "vqa" and bundle_run["n"] == 3
    assert [o["text"] for o in bundle_run["outputs"]] == [o["text"] for o in torch_run["outputs"]]
    assert bundle_run["v"] == torch_run["v"] and bundle_run["valid_json"] == torch_run["valid_json"]
    assert bundle_run["s_per_answer"] > 0 and "| bundle | vqa | image | 3 |" in result.output

    result = runner.invoke(bench_command, ["--vqa", "--vqa-n", "2", "--vqa-route", "caption", "--json", str(tmp_path / "b.json"),
                                           "--bundle", str(vlm_bundle["bundle"]), "--threads", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    (bench_run,) = json.loads((tmp_path / "b.json").read_text())["runs"]
    assert bench_run["engine"] == "bundle" and bench_run["route"] == "caption" and bench_run["n"] == 2
    from memlora.bench.vqa_bench import generated_examples
    from memlora.bench.vqa_eval import caption_messages

    meta = generated_examples("test", 1)[0]["meta"]  # the caption route: the caption in the prompt, no image
    want = vlm_bundle["torch"].generate(caption_messages(meta["question"], meta["caption"]), adapter="vqa", max_new_tokens=48)
    assert bench_run["outputs"][0]["text"] == want.text
