"""A tiny VLM whose LANGUAGE MODEL is pretrained: a pretrained tiny Qwen2 grafted into a tiny Qwen2.5-VL / InternVL3.

A random tiny VLM cannot learn any output format: its tied embeddings (std 0.02) and final RMSNorm gain 1 cap every logit
near 1.3, so no LoRA makes any token confident. A real user's VLM has a pretrained language model inside; here we grow one
the only way we can (no weights can be downloaded):

1. a tiny Qwen2 of exactly the VLM's text shape is pretrained from scratch on the synthetic world's raw conversation text
   (``memlora.world.pretrain.pretrain_world_model``: retrained BPE tokenizer, never-seen tokens initialised from the
   seen tokens' mean/covariance);
2. it continues on scene text (``scene_text_corpus``: sentences about shapes, colours, corners, counts, 30% of them as
   JSON records; no image, no question/answer) mixed with world text. Without this the words of the VQA answers
   (``yellow``, ``square``, ``":``...) never occur in pretraining, their output embeddings stay small, and the VQA
   expert's loss floors at ~2.6 per token;
3. it is grafted into the VLM (``graft_language_model``): the VLM is rebuilt (``memlora.vlm_models.build_vlm_model``,
   same arch, size and seed: the same random vision tower) with the LM's tokenizer plus the image special tokens, every
   language-model weight is copied (the output layer is tied), and the added special tokens get embeddings drawn from the
   LM's rows' mean and covariance;
4. the projector's output is standardised on unlabelled procedural scenes (``align_projector``: an exact affine change of
   its last linear layer; no label, caption or gradient): every feature dimension gets mean 0 and the LM's embedding
   std. Raw, 45% of the random tower's feature power is one vector shared by every image and position, at a quarter of
   the text embeddings' scale (measured on the tiny Qwen2.5-VL).

The vision tower itself stays random and frozen; the VQA expert (LoRA on the language model only) must learn to read it.
On text-only prompts the grafted VLM computes exactly the LM's logits (Qwen2.5-VL's 3-D mRoPE equals 1-D RoPE when the
three position streams are equal, as they are for text), which the tests check.

    memlora make-model --arch qwen2_5_vl --size tiny --pretrain world -o models/tiny-qwen-vl-world
    pretrain_vlm_world("models/tiny-qwen-vl", seed=0)              # a dir built by build_model, rewritten in place
    graft_language_model("models/tiny-qwen-vl", "models/my-lm")    # any pretrained Qwen2 of the same text shape
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from memlora import models
from memlora.corpus.vqa_data import (
    COLOURS,
    CORNERS,
    SHAPES,
    VQABenchmarkConfig,
    generate_split,
)
from memlora.errors import MemloraError
from memlora.runtime.vision_processor import PLACEHOLDERS, VisionProcessor
from memlora.vlm_models import build_vlm_model
from memlora.world.generator import WorldConfig, generate_world
from memlora.world.pretrain import (
    PretrainConfig,
    causal_lm_step,
    init_unseen_embeddings,
    pretrain_world_model,
    replace_files,
)

GRAFT_RECIPE_VERSION = 1

SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                "rms_norm_eps")
"""Text-config fields the LM and the VLM's language model must share for a graft."""

LM_SIZE_FOR_VLM = {"tiny": "tiny"}
"""VLM size -> the ``memlora.models`` qwen2 size of the same text shape (what ``pretrain_vlm_world`` pretrains)."""


def _read_info(model_dir: Path) -> dict:
    path = model_dir / "memlora_model.json"
    if not path.is_file():
        raise MemloraError(f"{model_dir} was not built by memlora.models (no memlora_model.json): build it with "
                           "`memlora make-model --arch qwen2_5_vl|internvl3` first")
    return json.loads(path.read_text())


def _text_config(config):
    return getattr(config, "text_config", None) or config


def check_graftable(vlm_config, lm_config) -> None:
    """Raise ``MemloraError`` unless the LM has the VLM language model's shape (and is a Qwen2)."""
    text, lm = _text_config(vlm_config), _text_config(lm_config)
    if getattr(lm, "model_type", None) != "qwen2":
        raise MemloraError(f"only a Qwen2 language model can be grafted into the VLM, got {getattr(lm, 'model_type', None)!r}")
    pairs = {f: (getattr(lm, f, None), getattr(text, f, None)) for f in SHAPE_FIELDS}
    diff = {f: (a, b) for f, (a, b) in pairs.items() if a != b}
    if diff:
        raise MemloraError("the language model's shape differs from the VLM's text decoder: "
                           + ", ".join(f"{f} {a} vs {b}" for f, (a, b) in diff.items()))
    if not getattr(lm, "tie_word_embeddings", False) or not getattr(vlm_config, "tie_word_embeddings", False):
        raise MemloraError("grafting needs tied word embeddings on both models (the tiny shapes have them)")


def graft_language_model(vlm_dir: str | os.PathLike, lm_dir: str | os.PathLike, seed: int | None = None,
                         align_images: int = 96, extra_info: dict | None = None) -> Path:
    """Replace the language model (and tokenizer) of the VLM in ``vlm_dir`` by the pretrained Qwen2 in ``lm_dir``.

    The vision tower + projector are rebuilt from the VLM's recorded seed (``seed`` overrides it), so they are the bytes
    ``memlora make-model`` gives; then the projector's output is standardised on ``align_images`` unlabelled procedural
    scenes (``align_projector``; 0 = skip). Files are replaced one by one with ``os.replace``; returns ``vlm_dir``.
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
    )


    vlm_dir, lm_dir = Path(vlm_dir), Path(lm_dir)
    info = _read_info(vlm_dir)
    arch, size = info.get("arch"), info.get("size")
    seed = info.get("seed", 0) if seed is None else seed
    if not (lm_dir / "config.json").is_file() or not (lm_dir / "tokenizer.json").is_file():
        raise MemloraError(f"{lm_dir} is not a language model dir (needs config.json and tokenizer.json)")
    check_graftable(AutoConfig.from_pretrained(str(vlm_dir)), AutoConfig.from_pretrained(str(lm_dir)))

    with tempfile.TemporaryDirectory(prefix="memlora-graft-", dir=vlm_dir.parent) as tmp_root:
        out = Path(tmp_root) / "out"
        build_vlm_model(arch, size, out, seed=seed, tokenizer_dir=lm_dir)
        vlm = AutoModelForImageTextToText.from_pretrained(str(out), dtype=torch.float32)
        lm = AutoModelForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32)
        target, source = vlm.model.language_model, lm.model
        n_lm = source.embed_tokens.weight.shape[0]
        n_vlm = target.embed_tokens.weight.shape[0]
        if n_vlm < n_lm:  # pragma: no cover - build_vlm_model only appends tokens
            raise MemloraError(f"the grafted tokenizer has {n_vlm} tokens, fewer than the LM's {n_lm}")
        state = source.state_dict()
        embed = state.pop("embed_tokens.weight")
        missing, unexpected = target.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"embed_tokens.weight"}:
            raise MemloraError(f"language-model weights do not line up: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            target.embed_tokens.weight[:n_lm] = embed
        # the image special tokens (appended) get rows from the LM's rows' mean and covariance
        added = init_unseen_embeddings(vlm, list(range(n_lm)), seed=seed)
        vlm.tie_weights()
        vlm.eval()
        alignment = None
        if align_images:
            alignment = align_projector(vlm, VisionProcessor(out), calibration_images(align_images, seed=seed))
        vlm.save_pretrained(out, safe_serialization=True)
        new_info = json.loads((out / "memlora_model.json").read_text())
        lm_info = json.loads((lm_dir / "memlora_model.json").read_text()) if (lm_dir / "memlora_model.json").is_file() else {}
        new_info.update(
            random_weights=False, parameters=sum(p.numel() for p in vlm.parameters()),
            pretraining={
                "kind": "graft", "recipe_version": GRAFT_RECIPE_VERSION,
                "language_model": lm_info.get("pretraining") or {"from": str(lm_dir)},
                "vision": "random (seeded) tower, not pretrained; projector output standardised (align_projector)",
                "image_token_rows_initialised": added, "projector_alignment": alignment, **(extra_info or {}),
            },
        )
        (out / "memlora_model.json").write_text(json.dumps(new_info, indent=2, sort_keys=True) + "\n")
        replace_files(out, vlm_dir, drop=("chat_template.jinja", "special_tokens_map.json"))
    return vlm_dir


# ------------------------------------------------------------------------------------------------- projector alignment
def _final_projector(model):
    """The last linear layer between the vision tower and the language model."""
    inner = model.model
    if hasattr(inner, "visual"):  # Qwen2.5-VL: the patch merger's MLP
        return inner.visual.merger.mlp[-1]
    return inner.multi_modal_projector.linear_2  # InternVL3


def image_features(model, processor, image):
    """The image embeddings [tokens, hidden] the language model receives for one PIL image."""
    import torch

    vision = processor.prepare(processor_placeholder(processor), [image])
    pixels = torch.from_numpy(vision.pixel_values)
    with torch.no_grad():
        if vision.image_grid_thw is not None:
            out = model.model.get_image_features(pixels, torch.from_numpy(vision.image_grid_thw))
        else:
            out = model.model.get_image_features(pixel_values=pixels)
    out = getattr(out, "pooler_output", out)
    if isinstance(out, (list, tuple)):
        out = torch.cat([o.reshape(-1, o.shape[-1]) for o in out])
    return out.reshape(-1, out.shape[-1])


def processor_placeholder(processor) -> str:
    return PLACEHOLDERS[processor.model_type][0]


def align_projector(model, processor, images, target_std: float | None = None) -> dict:
    """Standardise the projector's output on unlabelled ``images``: an exact affine change of its last linear layer so
    every feature dimension has mean 0 and the language model's embedding std (``target_std``; None = that of the input
    embeddings). No label, caption or gradient is involved; the vision tower itself is untouched.

    Why: a real VLM's projector is trained to speak the LM's embedding language (LLaVA's stage 1); this is the data-free
    minimum of that. Raw, about half of a random tower's feature power is one vector shared by all images and positions.
    Returns the statistics."""
    import torch

    feats = torch.cat([image_features(model, processor, image) for image in images])
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-8)
    target = float(target_std if target_std is not None else model.get_input_embeddings().weight.detach().std())
    linear = _final_projector(model)
    with torch.no_grad():
        scale = target / std
        linear.weight.mul_(scale[:, None])
        linear.bias.sub_(mean).mul_(scale)
    return {"images": len(images), "target_std": round(target, 5),
            "feature_norm_before": round(float(feats.norm(dim=-1).mean()), 5),
            "shared_vector_power_share_before": round(float(mean.pow(2).mean() / feats.pow(2).mean()), 5)}


def calibration_images(n: int, seed: int = 0, side: int = 112) -> list:
    """Unlabelled procedural scenes (``memlora.corpus.vqa_data`` drawings from their own seed stream, never a benchmark
    split's) for ``align_projector``."""
    cfg = VQABenchmarkConfig(seed=10_000_019 + seed, side=side)
    return [item.image for item in generate_split("train", n, cfg)]


# ------------------------------------------------------------------------------------------ scene text (visual vocabulary)
SCENE_SENTENCES = (
    "In this picture there {be} {n} {shape}{s} on a grey background.",
    "I drew {n} {colour} {shape}{s} today.",
    "The small square in the {corner} corner is {colour}.",
    "A little {colour} square sits in the {corner} corner of the picture.",
    "Every other object is a {shape}; only one is a {other}.",
    "All the shapes are {shape}s except one {other}.",
    "The big {shape} in the middle is {colour} and the small one is {other_colour}.",
    "She counted {n} {shape}{s} and one {other}.",
)
"""Plain-English sentences about shapes, colours, corners and counts (no image, no question/answer format)."""


JSON_KEYS = ["shape", "colour", "count", "corner"]
"""Keys of the JSON records in the scene text (never the VQA answer's keys)."""


def scene_text_corpus(n_sentences: int, seed: int = 0, json_share: float = 0.3) -> str:
    """Seeded text about simple scenes: the vocabulary a real VLM's language model knows (colours, shapes, corners,
    counts) and the synthetic world's text lacks, as plain sentences and, for ``json_share`` of the lines, as JSON
    records (``{"colour": "red", "corner": "top left", "note": "<sentence>"}``: real LMs have seen JSON; the world text
    has none). It describes NO image: a colour here is random, so nothing in it tells which colour a given image shows;
    it has no question, no answer and never the VQA output's keys."""
    import random


    rng = random.Random(f"memlora-scene-text/{seed}")
    colours, numbers = list(COLOURS), ["one", "two", "three", "four", "five", "1", "2", "3", "4", "5"]
    lines = []
    for _ in range(n_sentences):
        shape, other = rng.sample(SHAPES, 2)
        colour, other_colour = rng.sample(colours, 2)
        n = rng.choice(numbers)
        plural = n not in ("one", "1")
        sentence = rng.choice(SCENE_SENTENCES).format(
            be="are" if plural else "is", n=n, shape=shape, s="s" if plural else "", colour=colour, other=other,
            other_colour=other_colour, corner=rng.choice(list(CORNERS)))
        if rng.random() < json_share:  # a record, as data files and APIs write them
            keys = rng.sample(JSON_KEYS, 2)
            values = {"shape": shape, "colour": colour, "count": n, "corner": rng.choice(list(CORNERS)), "note": sentence}
            sentence = json.dumps({k: values[k] for k in keys + ["note"]})
        lines.append(sentence)
    return "\n".join(lines)


@dataclass
class SceneTextConfig:
    """Continued pretraining of the world LM on scene text (mixed with world text, so the world is not forgotten)."""

    sentences: int = 4000
    """Scene sentences generated (``scene_text_corpus``)."""
    steps: int = 150
    """Optimiser steps."""
    batch_size: int = 8
    """Sequences per step."""
    seq_len: int = 128
    """Tokens per sequence."""
    lr: float = 2e-3
    """AdamW learning rate (linear warm-up over 10 steps, then constant)."""
    world_share: float = 0.5
    """Share of each batch's sequences drawn from the world text."""
    threads: int | None = 1
    """torch CPU threads (None: torch's default)."""


def continue_pretraining(lm_dir: str | os.PathLike, texts: dict[str, str], config: SceneTextConfig, seed: int = 0) -> dict:
    """Causal-LM training of the model in ``lm_dir`` on ``texts`` (name -> text; ``"world"`` gets ``world_share`` of each
    batch, the rest is split evenly); rewrites its weights in place. Returns {"first_loss", "final_loss"}."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer


    lm_dir = Path(lm_dir)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    tok = AutoTokenizer.from_pretrained(str(lm_dir))
    windows = {}
    for name, text in texts.items():
        lines = text.split("\n")
        chunks = ["\n".join(lines[i : i + 200]) + "\n" for i in range(0, len(lines), 200)]  # under the tokenizer's max length
        ids = [t for chunk in tok(chunks, add_special_tokens=False)["input_ids"] for t in chunk]
        n = len(ids) // config.seq_len
        if n < 1:
            raise MemloraError(f"continued pretraining: the {name!r} text is shorter than one {config.seq_len}-token window")
        windows[name] = torch.tensor(ids[: n * config.seq_len]).view(n, config.seq_len)
    names = sorted(windows)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    n_world = round(config.batch_size * config.world_share) if "world" in windows else 0
    others = [n for n in names if n != "world"]
    losses = []
    for step in range(config.steps):
        parts = []
        if n_world:
            parts.append(windows["world"][torch.randint(len(windows["world"]), (n_world,), generator=gen)])
        rest = config.batch_size - n_world
        for k, name in enumerate(others):
            count = rest // len(others) + (1 if k < rest % len(others) else 0)
            parts.append(windows[name][torch.randint(len(windows[name]), (count,), generator=gen)])
        losses.append(causal_lm_step(model, optimizer, torch.cat(parts), config.lr * min(1.0, (step + 1) / 10)))
    model.eval()
    model.save_pretrained(str(lm_dir), safe_serialization=True)
    tail = losses[-10:]
    return {"first_loss": round(losses[0], 4), "final_loss": round(sum(tail) / len(tail), 4)}


def world_text(world_config=None) -> str:
    """The synthetic world's train conversations as plain ``Speaker: text`` lines (``memlora.world.generator``)."""
    world = generate_world(world_config or WorldConfig())
    return "\n\n".join("\n".join(f"{t.speaker}: {t.text}" for t in session.turns)
                         for conv in world.split("train") for session in conv.sessions)


def pretrain_vlm_world(vlm_dir: str | os.PathLike, seed: int = 0, config=None, scene: SceneTextConfig | None = None,
                       align_images: int = 96) -> Path:
    """Pretrain a Qwen2 of the VLM's text shape on the synthetic world (``config``: a ``PretrainConfig``; None = the world
    model's defaults), continue on scene text mixed with world text (``scene``; None = ``SceneTextConfig()``), and graft
    it into the VLM in ``vlm_dir`` (built by ``memlora.models.build_model``; projector standardised on ``align_images``
    unlabelled scenes); returns ``vlm_dir``."""

    vlm_dir = Path(vlm_dir)
    info = _read_info(vlm_dir)
    size = info.get("size")
    if size not in LM_SIZE_FOR_VLM:
        raise MemloraError(f"no language-model shape is registered for VLM size {size!r}: "
                           f"choose one of {', '.join(LM_SIZE_FOR_VLM)}")
    config = config or PretrainConfig()
    scene = scene or SceneTextConfig()
    tmp = Path(tempfile.mkdtemp(prefix="memlora-vlm-lm-", dir=vlm_dir.parent))
    try:
        lm_dir = models.build_model("qwen2", LM_SIZE_FOR_VLM[size], tmp / "lm", seed=seed)
        pretrain_world_model(lm_dir, seed=seed, config=config)
        texts = {"world": world_text(config.world), "scene": scene_text_corpus(scene.sentences, seed=seed)}
        scene_losses = continue_pretraining(lm_dir, texts, scene, seed=seed)
        return graft_language_model(vlm_dir, lm_dir, align_images=align_images, extra_info={
            "language_model_size": LM_SIZE_FOR_VLM[size],
            "scene_text": {**asdict(scene), **scene_losses,
                           "corpus": "sentences and JSON records about shapes, colours, corners and counts "
                                     "(scene_text_corpus), mixed with the world text; no image, no question/answer"},
        })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
