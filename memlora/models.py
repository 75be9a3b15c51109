"""Synthetic models: randomly initialised checkpoints of real architectures, built locally and deterministically.

No weights can be downloaded here, so tests, the demo and the speed work run on models this module builds: a real
``transformers`` architecture (Qwen2, Gemma2, Llama) at a tiny size or at a real published shape, random weights from a
seed, and a byte-level BPE tokenizer trained with ``tokenizers`` on ``memlora/data/tokenizer_corpus.txt`` with a ChatML
chat template. Everything is written with ``save_pretrained`` (safetensors), so transformers, peft and the
onnxruntime-genai builder load the directory exactly like a downloaded checkpoint.

    build_model("qwen2", "tiny", "out/tiny-qwen2", seed=0)      # -> Path, about a second
    ensure_model("gemma2", "tiny")                               # cached under the user cache dir
    parameter_count("qwen2", "qwen2.5-0.5b")                     # 494_032_768, built on the meta device
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from memlora import vlm_models
from memlora.errors import MemloraError
from memlora.paths import cache_dir, data_file, remove_stale_temps
from memlora.tokenizer import (  # noqa: F401 (re-exported)
    CHAT_TEMPLATE,
    CORPUS_NAME,
    IM_END,
    IM_START,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    TOKENIZER_VOCAB_SIZE,
    build_tokenizer,
    fork_rng,
)

# Bump when anything that changes the bytes of a built model changes (cache entries are keyed on it).
RECIPE_VERSION = 1

TEXT_ARCHS = ("qwen2", "gemma2", "llama")
VLM_ARCHS = ("qwen2_5_vl", "internvl3")

@dataclass(frozen=True)
class ModelShape:
    """One entry of the size registry: the config fields of a shape for one architecture."""

    arch: str  # architecture (model_type) this shape belongs to
    fields: dict[str, Any] = field(default_factory=dict)  # config fields (vocab_size None = the tokenizer's size)
    published_parameters: int | None = None  # parameter count of the published model, None for tiny shapes
    source: str = ""  # where the numbers come from


_TINY_COMMON = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
    max_position_embeddings=2048, vocab_size=None,
)

# size -> arch -> shape. ``tiny`` exists for every text arch; real shapes for the arch they were published for.
SIZES: dict[str, dict[str, ModelShape]] = {
    "tiny": {
        "qwen2": ModelShape("qwen2", dict(_TINY_COMMON, tie_word_embeddings=True,
                                          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                                          rms_norm_eps=1e-6, use_sliding_window=False, max_window_layers=2)),
        "gemma2": ModelShape("gemma2", dict(_TINY_COMMON, head_dim=16, query_pre_attn_scalar=16, tie_word_embeddings=True,
                                            # small but valid: the ORT GenAI builder needs max_length >= sliding_window
                                            sliding_window=512, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                            rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh")),
        "llama": ModelShape("llama", dict(_TINY_COMMON, tie_word_embeddings=False,
                                          rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                                          rms_norm_eps=1e-5)),
    },
    "qwen2.5-0.5b": {
        "qwen2": ModelShape("qwen2", dict(
            vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
            intermediate_size=4864, max_position_embeddings=32768, tie_word_embeddings=True, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False, sliding_window=32768,
            max_window_layers=24), published_parameters=494_032_768, source="Qwen/Qwen2.5-0.5B config.json"),
    },
    "qwen2.5-1.5b": {
        "qwen2": ModelShape("qwen2", dict(
            vocab_size=151936, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
            intermediate_size=8960, max_position_embeddings=131072, tie_word_embeddings=True, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False, sliding_window=131072,
            max_window_layers=28), published_parameters=1_543_714_304, source="Qwen/Qwen2.5-1.5B config.json"),
    },
    "gemma2-2b": {
        "gemma2": ModelShape("gemma2", dict(
            vocab_size=256000, hidden_size=2304, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
            intermediate_size=9216, max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, query_pre_attn_scalar=256, sliding_window=4096,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh"),
            published_parameters=2_614_341_888, source="google/gemma-2-2b config.json"),
    },
}

# tiny-world: the demo's default base, a little larger than tiny so that it can learn the
# memory operations of the synthetic world; pretrained from scratch by memlora.world.pretrain (--pretrain world).
SIZES["tiny-world"] = {"qwen2": ModelShape("qwen2", dict(
    SIZES["tiny"]["qwen2"].fields, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=384, max_window_layers=4))}

DTYPES = ("float32", "bfloat16", "float16")


# -------------------------------------------------------------------------------------------------------------- shapes
def resolve_shape(arch: str, size: str) -> ModelShape:
    """The registry entry for ``arch`` at ``size``; a clear ``MemloraError`` for unknown or mismatched names."""
    if arch not in TEXT_ARCHS:
        raise MemloraError(f"unknown arch {arch!r}: choose one of {', '.join(TEXT_ARCHS + VLM_ARCHS)}")
    if size not in SIZES:
        raise MemloraError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    if arch not in SIZES[size]:
        fits = ", ".join(SIZES[size])
        raise MemloraError(f"size {size!r} is a shape of arch {fits}, not {arch!r}: use --arch {fits} or --size tiny")
    return SIZES[size][arch]


def make_config(arch: str, size: str, vocab_size: int | None = None, special_ids: dict[str, int] | None = None):
    """The ``transformers`` config of ``arch`` at ``size``; ``vocab_size`` fills tiny shapes (None = tokenizer size)."""
    from transformers import AutoConfig

    shape = resolve_shape(arch, size)
    fields = dict(shape.fields)
    if fields.get("vocab_size") is None:
        fields["vocab_size"] = vocab_size or TOKENIZER_VOCAB_SIZE
    ids = special_ids or {}
    pad, eos = ids.get(PAD_TOKEN, 0), ids.get(IM_END, 2)
    fields.update(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    return AutoConfig.for_model(arch, **fields)


def parameter_count(arch: str, size: str) -> int:
    """Number of parameters of ``arch`` at ``size`` (shared tied weights counted once), built on the meta device: no RAM."""
    import torch
    from transformers import AutoModelForCausalLM

    vocab = None if resolve_shape(arch, size).fields.get("vocab_size") else len(build_tokenizer())
    config = make_config(arch, size, vocab_size=vocab)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------------------- build
def build_model(arch: str, size: str, out_dir, seed: int = 0, dtype: str = "float32") -> Path:
    """Build a random model of ``arch`` at ``size`` from ``seed`` into ``out_dir`` (created; must be empty or absent).

    Writes config.json, generation_config.json, model.safetensors, tokenizer.json and tokenizer_config.json. The same
    arguments give byte-identical files. VLM archs are built by ``memlora.vlm_models.build_vlm_model``.
    """
    out = _prepare_out_dir(out_dir)
    if arch in VLM_ARCHS:
        return _build_vlm(arch, size, out, seed)
    resolve_shape(arch, size)
    if dtype not in DTYPES:
        raise MemloraError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = build_tokenizer(out)
    special_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = make_config(arch, size, vocab_size=len(tokenizer), special_ids=special_ids)
    config.dtype = dtype

    with fork_rng(seed):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=special_ids[PAD_TOKEN], pad_token_id=special_ids[PAD_TOKEN],
        eos_token_id=[special_ids[IM_END], special_ids[PAD_TOKEN]], do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    (out / "memlora_model.json").write_text(json.dumps(
        {"recipe_version": RECIPE_VERSION, "arch": arch, "size": size, "seed": seed, "dtype": dtype,
         "parameters": sum(p.numel() for p in model.parameters()), "random_weights": True}, indent=2, sort_keys=True) + "\n")
    return out


def _prepare_out_dir(out_dir) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise MemloraError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise MemloraError(f"output dir {out} is not empty: choose a new directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".memlora-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise MemloraError(f"cannot write to output dir {out}: {exc.strerror or exc}") from None
    return out


def _build_vlm(arch: str, size: str, out: Path, seed: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="memlora-tok-") as tmp:
        build_tokenizer(tmp)
        return Path(vlm_models.build_vlm_model(arch, size, out, seed, tokenizer_dir=Path(tmp)))


# --------------------------------------------------------------------------------------------------------------- cache
def model_cache_key(arch: str, size: str, seed: int = 0, dtype: str = "float32", pretrain_tag: str | None = None) -> str:
    """Directory name of a cached model: everything that changes its bytes, plus the corpus hash. ``pretrain_tag`` names
    the pretraining run on the built model and its recipe version (a changed recipe rebuilds)."""
    corpus = hashlib.sha256(data_file(CORPUS_NAME).read_bytes()).hexdigest()[:10]
    tail = f"-{pretrain_tag}" if pretrain_tag else ""
    return f"{arch}-{size}-seed{seed}-{dtype}{tail}-r{RECIPE_VERSION}-{corpus}"


def ensure_model(arch: str = "qwen2", size: str = "tiny", seed: int = 0, dtype: str = "float32",
                 pretrain_tag: str | None = None, pretrain: Callable[[Path], object] | None = None) -> Path:
    """Path of the cached model (built on first use). Built in a temp dir and renamed, so a killed build leaves nothing
    half-done. ``pretrain`` (with its ``pretrain_tag``, part of the cache key) runs on the built model before it is cached
    (``memlora.world.pretrained``: the synthetic world's pretraining)."""
    if arch not in VLM_ARCHS:
        resolve_shape(arch, size)
    if (pretrain is None) != (pretrain_tag is None):
        raise MemloraError("ensure_model: a pretraining and its cache tag go together")
    root = cache_dir("models")
    final = root / model_cache_key(arch, size, seed, dtype, pretrain_tag)
    if final.is_dir():
        return final
    _remove_stale_builds(root)

    def build(tmp: Path) -> None:
        build_model(arch, size, tmp, seed=seed, dtype=dtype)
        if pretrain is not None:
            pretrain(tmp)

    return build_into_cache(final, build)


def build_into_cache(final: Path, build) -> Path:
    """Run ``build(tmp_dir)`` in a temp dir beside ``final`` and rename it to ``final``: a killed build leaves nothing
    half-done, and when a concurrent build wins the race its result is used."""
    tmp = Path(tempfile.mkdtemp(prefix=f".building-{final.name}-", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # a concurrent build won the race: use its result
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale_builds(root: Path) -> None:
    """Delete temp build dirs a killed process left behind (``remove_stale_temps``)."""
    remove_stale_temps(root, ".building-*")
