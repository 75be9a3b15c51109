"""Synthetic vision-language models: tiny random Qwen2.5-VL and InternVL3 with the real ``transformers`` architectures.

Each model is a vision tower + projector (Qwen2.5-VL: the patch merger; InternVL3: pixel shuffle + MLP) + a Qwen2 language
model, random weights from a seed, the project's byte-level BPE tokenizer with the architecture's image special tokens, a
ChatML chat template, and the image processor config (``preprocessor_config.json``) + ``processor_config.json``, saved with
``save_pretrained`` so transformers loads the directory like a downloaded checkpoint. Called by ``memlora.models.build_model``
(``memlora make-model --arch qwen2_5_vl|internvl3 --size tiny``).

    build_vlm_model("qwen2_5_vl", "tiny", "out/tiny-qwen-vl", seed=0, tokenizer_dir=tok_dir)

Placeholders: the prompt text carries ONE placeholder per image (``VISION_TOKENS[model_type]["placeholder"]``), expanded to
the image's token count by ``memlora.runtime.vision_processor.VisionProcessor``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memlora.errors import MemloraError
from memlora.tokenizer import IM_END, PAD_TOKEN, build_tokenizer, fork_rng

RECIPE_VERSION = 1

# model_type -> the special tokens of its image prompts (added to the tokenizer) and the one placeholder per image
VISION_TOKENS: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {
        "specials": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
        "placeholder": "<|vision_start|><|image_pad|><|vision_end|>",
        "image_token": "<|image_pad|>",
    },
    "internvl": {
        "specials": ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        "placeholder": "<img><IMG_CONTEXT></img>",
        "image_token": "<IMG_CONTEXT>",
    },
}
ARCH_MODEL_TYPE = {"qwen2_5_vl": "qwen2_5_vl", "internvl3": "internvl"}


@dataclass(frozen=True)
class VLMShape:
    """A tiny VLM: the text decoder, the vision tower and the image size the processor resizes to."""

    text: dict[str, Any] = field(default_factory=dict)  # Qwen2 text decoder fields (vocab_size filled from the tokenizer)
    vision: dict[str, Any] = field(default_factory=dict)  # vision tower fields
    image_side: int = 112  # pixels per side the processor produces (multiple of patch_size * merge)
    extra: dict[str, Any] = field(default_factory=dict)  # top-level config fields


_TINY_TEXT = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
    max_position_embeddings=2048, rms_norm_eps=1e-6, hidden_act="silu", use_sliding_window=False, max_window_layers=2,
)

VLM_SIZES: dict[str, dict[str, VLMShape]] = {
    "tiny": {
        # head_dim 16 -> rotary half 8 = mrope_section t,h,w
        "qwen2_5_vl": VLMShape(
            text=dict(_TINY_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}),
            vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                        temporal_patch_size=2, window_size=56, out_hidden_size=64, fullatt_block_indexes=[1], in_channels=3),
            image_side=112,
        ),
        "internvl3": VLMShape(
            text=dict(_TINY_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
            vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=[112, 112],
                        patch_size=[14, 14], use_qk_norm=False, norm_type="layer_norm", use_mean_pooling=True,
                        hidden_act="gelu", layer_scale_init_value=0.1),
            image_side=112,
            extra=dict(downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                       vision_feature_select_strategy="default"),
        ),
    },
}

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' %}{{- IMAGE_PLACEHOLDER }}"
    "{%- elif item['type'] == 'text' %}{{- item['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""ChatML; a message's content is a string, or Qwen-VL-style items (``{"type": "image"}`` / ``{"type": "text", "text"}``)."""


def chat_template_for(model_type: str) -> str:
    placeholder = VISION_TOKENS[model_type]["placeholder"]
    return CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", json.dumps(placeholder))


def resolve_vlm_shape(arch: str, size: str) -> VLMShape:
    if arch not in ARCH_MODEL_TYPE:
        raise MemloraError(f"unknown VLM arch {arch!r}: choose one of {', '.join(ARCH_MODEL_TYPE)}")
    if size not in VLM_SIZES or arch not in VLM_SIZES[size]:
        sizes = [s for s, archs in VLM_SIZES.items() if arch in archs]
        raise MemloraError(f"VLM arch {arch!r} has no size {size!r}: choose one of {', '.join(sizes)}")
    return VLM_SIZES[size][arch]


def _tokenizer_with_image_tokens(tokenizer_dir: Path, model_type: str):
    """The project tokenizer plus the architecture's image special tokens (appended: text token ids are unchanged)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    specials = VISION_TOKENS[model_type]["specials"]
    existing = [str(t) for t in tok.extra_special_tokens or []]
    tok.add_special_tokens({"extra_special_tokens": existing + [t for t in specials if t not in existing]},
                           replace_extra_special_tokens=True)
    tok.chat_template = chat_template_for(model_type)
    return tok


def _qwen2_5_vl(shape: VLMShape, tok, ids: dict[str, int]):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    text = dict(shape.text, vocab_size=len(tok), bos_token_id=ids["pad"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                tie_word_embeddings=True)
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(shape.vision), tie_word_embeddings=True,
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"), video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        bos_token_id=ids["pad"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
    )
    unit = shape.vision["patch_size"] * shape.vision["spatial_merge_size"]
    pixels = shape.image_side * shape.image_side
    processor = Qwen2VLImageProcessorPil(
        min_pixels=unit * unit, max_pixels=pixels, patch_size=shape.vision["patch_size"],
        temporal_patch_size=shape.vision["temporal_patch_size"], merge_size=shape.vision["spatial_merge_size"],
    )
    return config, Qwen2_5_VLForConditionalGeneration, processor, {"processor_class": "Qwen2_5_VLProcessor"}


def _internvl3(shape: VLMShape, tok, ids: dict[str, int]):
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    text = dict(shape.text, model_type="qwen2", vocab_size=len(tok), bos_token_id=ids["pad"], eos_token_id=ids["eos"],
                pad_token_id=ids["pad"], tie_word_embeddings=True)
    config = InternVLConfig(
        vision_config=dict(shape.vision), text_config=text, image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=image_seq_length_internvl(shape), tie_word_embeddings=True, **shape.extra,
    )
    side = shape.image_side
    processor = GotOcr2ImageProcessorPil(
        size={"height": side, "width": side}, crop_to_patches=False, min_patches=1, max_patches=1,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    return config, InternVLForConditionalGeneration, processor, {
        "processor_class": "InternVLProcessor", "image_seq_length": image_seq_length_internvl(shape),
    }


def image_seq_length_internvl(shape: VLMShape) -> int:
    patches = shape.vision["image_size"][0] // shape.vision["patch_size"][0]
    return int(patches * patches * shape.extra["downsample_ratio"] ** 2)


def build_vlm_model(arch: str, size: str, out_dir, seed: int = 0, tokenizer_dir=None) -> Path:
    """Build a random ``arch`` VLM at ``size`` into ``out_dir`` (which ``build_model`` prepared); returns ``out_dir``.

    ``tokenizer_dir`` holds the project's text tokenizer (``memlora.tokenizer.build_tokenizer``); image tokens are added here.
    """
    import torch
    from transformers import GenerationConfig

    shape = resolve_vlm_shape(arch, size)
    model_type = ARCH_MODEL_TYPE[arch]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="memlora-tok-") as tmp:
            build_tokenizer(tmp)
            return build_vlm_model(arch, size, out, seed, tokenizer_dir=Path(tmp))
    tok = _tokenizer_with_image_tokens(Path(tokenizer_dir), model_type)
    ids = {"pad": tok.convert_tokens_to_ids(PAD_TOKEN), "eos": tok.convert_tokens_to_ids(IM_END)}
    config, model_class, image_processor, processor_config = (_qwen2_5_vl if arch == "qwen2_5_vl" else _internvl3)(shape, tok, ids)

    with fork_rng(seed):
        model = model_class(config).to(torch.float32)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["pad"], pad_token_id=ids["pad"], eos_token_id=[ids["eos"], ids["pad"]], do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    _write_tokenizer_config(out, model_type)
    image_processor.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps(processor_config, indent=2, sort_keys=True) + "\n")
    (out / "memlora_model.json").write_text(json.dumps(
        {"recipe_version": RECIPE_VERSION, "arch": arch, "size": size, "seed": seed, "dtype": "float32",
         "model_type": model_type, "parameters": sum(p.numel() for p in model.parameters()), "random_weights": True,
         "vision_placeholder": VISION_TOKENS[model_type]["placeholder"]}, indent=2, sort_keys=True) + "\n")
    return out


def _write_tokenizer_config(out: Path, model_type: str) -> None:
    """Template inline in tokenizer_config.json (one source of truth, as for the text models); stable key order."""
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = chat_template_for(model_type)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if model_type == "internvl":  # the attributes InternVLProcessor reads from the tokenizer
        cfg["extra_special_tokens"] = {
            "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        }
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    jinja = out / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()
