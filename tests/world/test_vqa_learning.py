"""Learning test of the VQA expert (MemLoRA-V) on the tiny Qwen2.5-VL, and the language-model graft it needs.

A random tiny VLM cannot learn any format (tied embeddings of std 0.02 and final-norm gain 1 cap every logit near 1.3), so
the base is what a real user has in miniature: a VLM whose LANGUAGE MODEL is pretrained (``memlora.world.vlm_pretrain``: a tiny
Qwen2 pretrained on the synthetic world's text and on scene text, grafted into the VLM), with the random vision
tower frozen and the projector's output standardised on unlabelled scenes. The VQA expert is LoRA on the language model.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from memlora.errors import MemloraError
from memlora.world.vqa_learning import VQALearningConfig, run_seed, strictly_valid_vqa

# One seed, colour questions only, sized for CI (measured: ~50 s with 1 thread on 2 busy cores: model 16-18 s, training
# 25 s). At this size the expert learns the answer format but NOT yet the colour (V 0.167 vs majority 0.133): reading the
# colour from the random tower's features takes ~12 epochs of 1200 examples (FULL_CONFIG, ~3.5 min, the README's table 1).
CI_CONFIG = VQALearningConfig(
    types=("colour",), n_train=400, n_val=16, n_test=30, pretrain_steps=150, scene_steps=150, lr=3e-3, max_epochs=8,
    patience=8, reports=("base_image", "expert_image"),
)
FULL_CONFIG = VQALearningConfig(types=("colour",))
FULL_ENV = "MEMLORA_VQA_FULL"


@pytest.fixture(scope="module")
def learning_run(tmp_path_factory):
    torch.set_num_threads(1)
    return run_seed(tmp_path_factory.mktemp("vqa-learning"), 0, CI_CONFIG)


def test_vqa_expert_learns_the_answer_format(learning_run):
    """Measured (seed 0): base 0% strict JSON (it continues world chatter); expert 100%; val loss 2.74 -> 0.37."""
    run = learning_run
    base, expert = run["base_image"], run["expert_image"]
    assert run["n_test"] == 30 and run["pretraining"]["kind"] == "graft"
    assert base["strict_json"] < 0.10, run["examples"]["base_image"]
    assert expert["strict_json"] >= 0.95, run["examples"]["expert_image"]
    assert run["val_loss"][1] < 0.3 * run["val_loss"][0]


@pytest.mark.skipif(not os.environ.get(FULL_ENV), reason=f"full-size VQA learning run (~3.5 min): set {FULL_ENV}=1")
def test_vqa_expert_reads_the_colour_from_the_image_full_size(tmp_path):
    """The README's table 1, seed 0 (measured: colour V 1.000 vs majority 0.167 and caption-only 0.167; 100% strict)."""
    torch.set_num_threads(1)
    run = run_seed(tmp_path, 0, FULL_CONFIG)
    expert, majority = run["expert_image"], run["majority"]["colour"]
    assert run["base_image"]["strict_json"] < 0.10 and expert["strict_json"] >= 0.95
    # the colour is in the image only (random per image): beating the answer prior needs the pixels
    assert expert["v_by_type"]["colour"] >= majority + 0.3, (expert, majority)
    # caption-only (Mem0-style: the base VLM's caption kept, the image dropped) cannot know the small square's colour
    assert expert["v_by_type"]["colour"] >= run["caption_vlm"]["v_by_type"]["colour"] + 0.3, run["caption_vlm"]


def test_summary_over_seeds_and_table():
    from memlora.world.vqa_learning import format_table, summarize

    def report(v):
        return {"v": v, "valid_json": 1.0, "strict_json": 1.0, "s_per_answer": 0.1, "v_by_type": {"colour": v}}

    runs = [{"seed": s, "majority": {"colour": 0.2, "all": 0.2}, "base_image": report(0.0), "expert_image": report(v)}
            for s, v in ((0, 0.5), (1, 0.7))]
    summary = summarize(runs)
    assert summary["seeds"] == [0, 1] and "caption_vlm" not in summary
    assert summary["expert_image"]["v"]["mean"] == pytest.approx(0.6)
    assert summary["expert_image"]["v"]["sd"] == pytest.approx(0.1414, abs=1e-4)
    table = format_table(summary)
    assert "| expert_image | 0.600 ± 0.141 | 0.600 ± 0.141 |" in table and "| majority answer | 0.200 ± 0.000 |" in table


@pytest.mark.parametrize("text, ok", [
    ('{"answer": "red", "reason": "The square is red."}', True),
    ('{"answer": "dark red", "reason": "two words"}', False),
    ('{"answer": "red"}', False),
    ('{"answer": "red", "reason": ""}', False),
    ('{"answer":: red", "reason": "x"}', False),
    ('red', False),
])
def test_strict_vqa_json(text, ok):
    assert strictly_valid_vqa(text) is ok


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "internvl3"])
def test_graft_puts_the_language_model_in_the_vlm(tiny_model, tmp_path, arch):
    """Text-only logits of the grafted VLM equal the LM's; the vision tower is the seed's; the projector is standardised."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from memlora.models import build_model
    from memlora.runtime.vision_processor import VisionProcessor
    from memlora.world.vlm_pretrain import calibration_images, graft_language_model, image_features

    torch.set_num_threads(1)
    lm_dir = tiny_model("qwen2")
    plain = build_model(arch, "tiny", tmp_path / "plain", seed=0)
    grafted = graft_language_model(build_model(arch, "tiny", tmp_path / "vlm", seed=0), lm_dir, align_images=24)

    lm = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    vlm = AutoModelForImageTextToText.from_pretrained(str(grafted))
    ids = AutoTokenizer.from_pretrained(str(grafted))("Alice: I moved to Lisbon last week.", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = vlm(input_ids=ids).logits, lm(input_ids=ids).logits
    assert a.shape[-1] == b.shape[-1] + 4  # the image special tokens
    assert torch.equal(a[..., : b.shape[-1]], b)

    info = json.loads((grafted / "memlora_model.json").read_text())
    assert info["random_weights"] is False and info["pretraining"]["kind"] == "graft"
    ref = AutoModelForImageTextToText.from_pretrained(str(plain)).state_dict()
    got = vlm.state_dict()
    projector_out = ("visual.merger.mlp.2.", "multi_modal_projector.linear_2.")  # what align_projector rescales
    vision = [k for k in ref if any(s in k for s in ("visual", "vision_tower", "multi_modal_projector"))]
    kept = [k for k in vision if not any(s in k for s in projector_out)]
    assert kept and all(torch.equal(ref[k], got[k]) for k in kept)
    changed = [k for k in vision if k not in kept]  # the projector's last weight and bias
    assert len(changed) == 2 and not any(torch.equal(ref[k], got[k]) for k in changed)

    feats = torch.cat([image_features(vlm, VisionProcessor(grafted), im) for im in calibration_images(24, seed=0)])
    assert feats.mean(0).abs().max() < 1e-3
    target = vlm.get_input_embeddings().weight.detach().std()
    assert torch.allclose(feats.std(0), torch.full_like(feats.std(0), float(target)), rtol=1e-3)


def test_graft_refuses_a_language_model_of_another_shape(tiny_model, tmp_path):
    from transformers import AutoConfig

    from memlora.models import build_model
    from memlora.world.vlm_pretrain import check_graftable, graft_language_model

    vlm = build_model("qwen2_5_vl", "tiny", tmp_path / "vlm", seed=0)
    before = sorted((p.name, p.stat().st_size) for p in vlm.iterdir())
    with pytest.raises(MemloraError, match="only a Qwen2"):
        graft_language_model(vlm, tiny_model("llama"))
    qwen = AutoConfig.from_pretrained(str(tiny_model("qwen2")))
    qwen.intermediate_size = 256
    with pytest.raises(MemloraError, match="intermediate_size 256 vs 128"):
        check_graftable(AutoConfig.from_pretrained(str(vlm)), qwen)
    with pytest.raises(MemloraError, match="not a language model dir"):
        graft_language_model(vlm, tmp_path)
    assert sorted((p.name, p.stat().st_size) for p in vlm.iterdir()) == before  # nothing was touched


def test_make_model_pretrain_world_routes_a_vlm_to_the_graft(tmp_path, monkeypatch):
    """``memlora make-model --arch qwen2_5_vl --pretrain world`` (``pretrain_model``) grafts the VLM."""
    import memlora.world.vlm_pretrain as vlm_pretrain
    from memlora.models import build_model
    from memlora.world.pretrained import pretrain_model

    calls = []
    monkeypatch.setattr(vlm_pretrain, "pretrain_vlm_world", lambda path, seed=0: calls.append((path, seed)))
    vlm = build_model("qwen2_5_vl", "tiny", tmp_path / "vlm", seed=0)
    assert pretrain_model("world", vlm, seed=2) == vlm and calls == [(vlm, 2)]
