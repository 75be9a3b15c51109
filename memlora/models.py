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
import importlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from memlora.errors import MemloraError
from memlora.paths import cache_dir, data_file

# Bump when anything that changes the bytes of a built model changes (cache entries are keyed on it).
RECIPE_VERSION = 1

TEXT_ARCHS = ("qwen2", "gemma2", "llama")
VLM_ARCHS = ("qwen2_5_vl", "internvl3")

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)
TOKENIZER_VOCAB_SIZE = 2048
CORPUS_NAME = "tokenizer_corpus.txt"

# Qwen2's pre-tokenizer split (digits one at a time, words with a leading space), then byte-level without a second regex.
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


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
        "qwen2": ModelShape("qwen2", dict(_TINY_COMMON, tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                                          rms_norm_eps=1e-6, use_sliding_window=False, max_window_layers=2)),
        "gemma2": ModelShape("gemma2", dict(_TINY_COMMON, head_dim=16, query_pre_attn_scalar=16, tie_word_embeddings=True,
                                            # small but valid: the ORT GenAI builder needs max_length >= sliding_window
                                            sliding_window=512, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                            rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh")),
        "llama": ModelShape("llama", dict(_TINY_COMMON, tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
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

# tiny-world (added by the world engineer): the demo's default base, a little larger than tiny so that it can learn the
# memory operations of the synthetic world; pretrained from scratch by memlora.distill.world_model (--pretrain world).
SIZES["tiny-world"] = {"qwen2": ModelShape("qwen2", dict(
    SIZES["tiny"]["qwen2"].fields, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=384, max_window_layers=4))}

DTYPES = ("float32", "bfloat16", "float16")


# ----------------------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer(out_dir=None, corpus: str | os.PathLike | None = None, vocab_size: int = TOKENIZER_VOCAB_SIZE):
    """Train the byte-level BPE tokenizer (deterministic) and return it as a ``PreTrainedTokenizerFast``.

    With ``out_dir`` it is also saved there (tokenizer.json + tokenizer_config.json with the ChatML chat template).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus_path = Path(corpus) if corpus is not None else data_file(CORPUS_NAME)
    if not corpus_path.is_file():
        raise MemloraError(f"tokenizer corpus not found: {corpus_path}")
    text = corpus_path.read_text(encoding="utf-8")
    # paragraphs as training units, in file order (the trainer's counts do not depend on order, but keep it fixed)
    paragraphs = [p for p in text.split("\n\n") if p.strip()]

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(paragraphs, trainer=trainer, length=len(paragraphs))

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN, unk_token=None, bos_token=None,
        additional_special_tokens=[IM_START, IM_END], model_max_length=32768, clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(out)
        _normalise_tokenizer_files(out)
    return fast


def _normalise_tokenizer_files(out: Path) -> None:
    """Rewrite tokenizer_config.json with sorted keys and the ChatML template inline (stable bytes across runs)."""
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    jinja = out / "chat_template.jinja"
    if jinja.exists():  # keep one source of truth for the template
        jinja.unlink()


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

    with _fork_rng(seed):
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


class _fork_rng:
    """Seed torch's CPU generator for the duration of a block and restore the caller's state afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        import torch

        self._state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        import torch

        torch.random.set_rng_state(self._state)
        return False


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
    try:
        vlm = importlib.import_module("memlora.vlm_models")
    except ModuleNotFoundError as exc:
        if exc.name != "memlora.vlm_models":
            raise
        raise MemloraError(f"arch {arch!r} needs memlora.vlm_models, which is not installed in this build") from None
    with tempfile.TemporaryDirectory(prefix="memlora-tok-") as tmp:
        build_tokenizer(tmp)
        return Path(vlm.build_vlm_model(arch, size, out, seed, tokenizer_dir=Path(tmp)))


# --------------------------------------------------------------------------------------------------------------- cache
def model_cache_key(arch: str, size: str, seed: int = 0, dtype: str = "float32", pretrain: str | None = None) -> str:
    """Directory name of a cached model: everything that changes its bytes, plus the corpus hash."""
    corpus = hashlib.sha256(data_file(CORPUS_NAME).read_bytes()).hexdigest()[:10]
    tail = ""
    if pretrain:  # the pretraining recipe's version is part of the key too, so a changed recipe rebuilds
        version = getattr(importlib.import_module(pretrainer(pretrain).__module__), "PRETRAIN_RECIPE_VERSION", 0)
        tail = f"-{pretrain}{version}"
        if arch in VLM_ARCHS:  # a VLM's language model is grafted (memlora.vlm_pretrain): its recipe counts too
            tail += f"-graft{importlib.import_module('memlora.vlm_pretrain').GRAFT_RECIPE_VERSION}"
    return f"{arch}-{size}-seed{seed}-{dtype}{tail}-r{RECIPE_VERSION}-{corpus}"


def ensure_model(arch: str = "qwen2", size: str = "tiny", seed: int = 0, dtype: str = "float32", pretrain: str | None = None) -> Path:
    """Path of the cached model (built on first use). Built in a temp dir and renamed, so a killed build leaves nothing half-done."""
    if arch not in VLM_ARCHS:
        resolve_shape(arch, size)
    if pretrain:
        pretrainer(pretrain)  # fail before building when it is not available
    root = cache_dir("models")
    final = root / model_cache_key(arch, size, seed, dtype, pretrain)
    if final.is_dir():
        return final
    _remove_stale_builds(root)

    def build(tmp: Path) -> None:
        build_model(arch, size, tmp, seed=seed, dtype=dtype)
        if pretrain:
            pretrain_model(pretrain, tmp, seed=seed)

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


STALE_BUILD_SECONDS = 6 * 3600


def _remove_stale_builds(root: Path) -> None:
    """Delete temp build dirs a killed process left behind (untouched for STALE_BUILD_SECONDS; a live build is younger)."""
    import time

    for tmp in root.glob(".building-*"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_BUILD_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


PRETRAIN_KINDS = ("world", "world-copy")
"""world: the synthetic memory world's text (the ``plain`` preset's recipe); world-copy: the same text with a fixed copy
head and frozen random embeddings (the demo's default ``copy`` preset's recipe; text models only)."""


def pretrainer(kind: str):
    """The function that pretrains a built model in place for ``kind``; a clear ``MemloraError`` when it is not available."""
    if kind not in PRETRAIN_KINDS:
        raise MemloraError(f"unknown pretraining {kind!r}: choose one of {', '.join(PRETRAIN_KINDS)}")
    try:
        world = importlib.import_module("memlora.distill.world_model")
    except ModuleNotFoundError as exc:
        if exc.name != "memlora.distill.world_model":
            raise
        raise MemloraError("--pretrain world is not available: memlora.distill.world_model is not part of this build") from None
    return world.pretrain_world_model_copy if kind == "world-copy" else world.pretrain_world_model


def pretrain_model(kind: str, model_dir, seed: int = 0) -> Path:
    """Pretrain a freshly built model in place (``world``: on the synthetic memory world, by ``memlora.distill.world_model``;
    for a VLM, a world-pretrained Qwen2 of its text shape is grafted in as its language model by ``memlora.vlm_pretrain``)."""
    run = pretrainer(kind)
    info = Path(model_dir) / "memlora_model.json"
    if info.is_file() and json.loads(info.read_text()).get("arch") in VLM_ARCHS:
        if kind != "world":
            raise MemloraError(f"--pretrain {kind} is for text models; a VLM takes --pretrain world (its grafted language model)")
        from memlora.vlm_pretrain import pretrain_vlm_world

        pretrain_vlm_world(Path(model_dir), seed=seed)
        return Path(model_dir)
    run(Path(model_dir), seed=seed)
    return Path(model_dir)


# ----------------------------------------------------------------------------------------------------------------- CLI
@click.command("make-model")
@click.option("--arch", default="qwen2", show_default=True, help=f"Architecture: {', '.join(TEXT_ARCHS + VLM_ARCHS)}.")
@click.option("--size", default="tiny", show_default=True, help=f"Shape: {', '.join(SIZES)} (a real shape fits one arch).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random weights (same seed = same bytes).")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(DTYPES), help="Weight dtype saved.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output dir (new or empty). Default: the user cache (reused when already built).")
@click.option("--pretrain", type=click.Choice(PRETRAIN_KINDS), default=None, help="Pretrain the random model (world: on the synthetic memory world; world-copy: the same with the demo's copy head).")
def make_model_command(arch: str, size: str, seed: int, dtype: str, out_dir: Path | None, pretrain: str | None) -> None:
    """Build a synthetic model (random weights, local tokenizer) of a real architecture, loadable like any checkpoint."""
    if arch not in VLM_ARCHS:
        resolve_shape(arch, size)  # fail fast, before any heavy import or any file is written
    if pretrain:
        pretrainer(pretrain)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars are noise here
    if out_dir is None:
        path = ensure_model(arch, size, seed=seed, dtype=dtype, pretrain=pretrain)
    else:
        path = build_model(arch, size, out_dir, seed=seed, dtype=dtype)
        if pretrain:
            pretrain_model(pretrain, path, seed=seed)
    info_path = path / "memlora_model.json"
    params = json.loads(info_path.read_text()).get("parameters") if info_path.exists() else None
    click.echo(f"model written to {path}")
    if params is not None:
        click.echo(f"parameters: {params:,} ({arch}, {size}, seed {seed}, random weights)")
