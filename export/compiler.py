"""``export_bundle``: trained experts in ``out/`` + a base model dir -> a verified ONNX Runtime GenAI multi-LoRA bundle.

Passes, in order (each in its own module):

1. read the base model's LoRA-able layers (``base_model``) and every expert in ``out/`` (``adapters``: refuses DoRA, non-LoRA,
   foreign shapes, unknown modules — before anything is written);
2. externalized experts: build the plain base graph once (``genai_builder``), add one LoRA branch per projection node the
   experts' union reaches (``union`` + ``multilora``), write one ``.onnx_adapter`` per expert (``onnx_adapter``);
   no externalized expert: the plain base graph; then the LM head on the last position only (``last_token_logits``);
3. merged experts: ``merge_and_unload`` then a builder run each (``merge``) -> ``merged/<stage>/``, the same last-position
   head;
4. the embedder (``embedder_export``);
5. ``bundle.json`` with checksums (``manifest``) and the chat template as a checked form (``chat_form``), read by
   ``memlora.runtime.bundle.load_bundle``.

Everything is written into a temporary directory beside the output and renamed into place at the end: a failed export leaves
no partial bundle (and an existing bundle is only replaced with ``overwrite``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from memlora.errors import AdapterError, MemloraError
from memlora.export.adapters import Expert, read_experts
from memlora.export.base_model import read_base_model
from memlora.export.chat_form import chat_entry
from memlora.export.defaults import int4_block_from_cards
from memlora.export.embedder_export import EmbedderExportConfig, export_embedder
from memlora.export.genai_builder import BuilderConfig, run_builder
from memlora.export.last_token_logits import rewrite_model_file
from memlora.export.manifest import created_by, list_files, toolchain_versions, write_manifest
from memlora.export.merge import merge_expert
from memlora.export.multilora import add_lora_branches
from memlora.export.onnx_adapter import write_onnx_adapter
from memlora.export.steps import StepReporter
from memlora.export.union import UnionSpec
from memlora.runtime.bundle import load_bundle

MODEL_FILES = ("model.onnx", "model.onnx.data")


UNION_LAYERS = ("used", "all")
"""``ExportConfig.union_layers`` choices."""


@dataclass
class ExportConfig:
    """What ``memlora-export`` builds."""

    base: Path
    """Local Hugging Face base model directory (the student the experts were trained on)."""
    output: Path
    """Bundle directory to create."""
    adapters: Path | None = None
    """``out/`` of memlora-train: one peft LoRA dir per stage (None = base model only)."""
    mode: str = "externalize"
    """externalize: experts are runtime adapters on one multi-LoRA graph; merge: every expert merged into its own model."""
    merge: tuple[str, ...] = ()
    """Stages to merge while the rest stay externalized (ignored when mode=merge, which merges all)."""
    builder: BuilderConfig = field(default_factory=BuilderConfig)
    """onnxruntime-genai builder settings (precision fp32|int4, ...)."""
    union_layers: str = "used"
    """used: a LoRA branch only on the layers where an expert adapts that projection (top-N-layer experts add none below);
    all: on every layer for each projection of the union (room for later experts on other layers, no rebuild)."""
    last_token_logits: bool = True
    """LM head on the last position only (``last_token_logits``): prefill skips the vocabulary projection of every other
    position; False keeps logits for every position (to score whole sequences with the graph)."""
    embedder: EmbedderExportConfig | None = None
    """Embedder export settings; None = no embedder in the bundle."""
    overwrite: bool = False
    """Replace an existing bundle at ``output``."""
    quiet: bool = False
    """No progress output."""

    def __post_init__(self) -> None:
        self.base, self.output = Path(self.base), Path(self.output)
        self.adapters = Path(self.adapters) if self.adapters is not None else None
        if self.mode not in ("externalize", "merge"):
            raise MemloraError(f"mode must be externalize or merge, not {self.mode!r}")
        self.merge = tuple(self.merge)
        if self.union_layers not in UNION_LAYERS:
            raise MemloraError(f"union_layers must be one of {', '.join(UNION_LAYERS)}, not {self.union_layers!r}")


def _split_experts(experts: list[Expert], config: ExportConfig) -> tuple[list[Expert], list[Expert]]:
    names = {e.stage for e in experts}
    unknown = sorted(set(config.merge) - names)
    if unknown:
        raise AdapterError(f"--merge names stages with no expert in {config.adapters}: {', '.join(unknown)} (have: {sorted(names)})")
    merged_names = names if config.mode == "merge" else set(config.merge)
    return [e for e in experts if e.stage not in merged_names], [e for e in experts if e.stage in merged_names]


def _builder_config_for(base_config: BuilderConfig, has_sliding_window: bool, adapters: Path | None) -> BuilderConfig:
    # A windowed KV cache needs max_length >= the sliding window at run time; the full cache works for any length and gives
    # the same logits (checked against transformers beyond the window on Gemma2).
    if base_config.windowed_kv_cache is None and has_sliding_window:
        base_config = dataclasses.replace(base_config, windowed_kv_cache=False)
    # int4 with no block size given: the block the experts were trained against (memlora-train --int4-base), if any
    if base_config.precision == "int4" and base_config.block_size is None and adapters is not None:
        base_config = dataclasses.replace(base_config, block_size=int4_block_from_cards(adapters))
    return base_config


def _copy_model_dir(build_dir: Path, dest: Path, *, skip_model: bool) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in build_dir.iterdir():
        if item.is_file() and not (skip_model and item.name in MODEL_FILES):
            shutil.copy2(item, dest / item.name)


def export_bundle(config: ExportConfig) -> Path:
    """Build the bundle described by ``config``; returns its path. Raises ``MemloraError`` subclasses, writing nothing."""
    import json

    output = config.output
    if output.exists() and not config.overwrite:
        raise MemloraError(f"{output} already exists; choose another -o or pass --force to replace it")
    base = read_base_model(config.base)
    experts = read_experts(config.adapters, base) if config.adapters is not None else []
    externalized, merged = _split_experts(experts, config)
    union = UnionSpec.of(externalized)
    hf_config = json.loads((config.base / "config.json").read_text())
    builder_config = _builder_config_for(config.builder, bool((hf_config.get("text_config") or hf_config).get("sliding_window")),
                                         config.adapters)
    is_vlm = hf_config.get("vision_config") is not None
    decoder_source, decoder_base = config.base, base  # what the builder reads (a VLM's language model may need extracting)
    if is_vlm:  # the text decoder takes inputs_embeds; the vision half is exported by export/vlm_export.py
        from memlora.export.vlm_export import BUILDER_OPTIONS, check_vlm_supported  # torch: loaded for a VLM only

        vlm_type = check_vlm_supported(config.base)
        if merged:
            raise MemloraError("a vision-language bundle serves experts as runtime adapters only: drop --mode merge / --merge")
        builder_config = dataclasses.replace(builder_config, extra_options={**BUILDER_OPTIONS, **builder_config.extra_options})

    total = 4 + len(merged) + (1 if externalized else 0) + (1 if config.embedder else 0) + (1 if is_vlm else 0)
    steps = StepReporter(total, quiet=config.quiet)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.work-", dir=output.parent))
    try:
        with steps.step(f"read {len(experts)} expert(s) and the base model ({base.architecture})"):
            if is_vlm and vlm_type == "internvl":  # the builder has no InternVL: its Qwen2 language model as its own dir
                from memlora.export.vlm_export import extract_language_model  # torch: loaded for a VLM only

                decoder_source = extract_language_model(config.base, work / "language_model")
                decoder_base = read_base_model(decoder_source)
        with steps.step(f"build the {builder_config.precision} base graph" + (f" with the LoRA union {union.ranks}" if union else "")):
            if union:
                run_builder(decoder_source, work / "base", builder_config, base=decoder_base)
                slots = add_lora_branches(work / "base" / "model.onnx", staging / "model", decoder_base, union.modules,
                                          layers=union.layers if config.union_layers == "used" else None)
                _copy_model_dir(work / "base", staging / "model", skip_model=True)
            else:
                slots = []
                run_builder(decoder_source, work / "base", builder_config, base=decoder_base)
                _copy_model_dir(work / "base", staging / "model", skip_model=False)
            if config.last_token_logits:
                rewrite_model_file(staging / "model" / "model.onnx")
        expert_entries: dict[str, dict] = {}
        if externalized:
            with steps.step(f"write {len(externalized)} adapter(s): {', '.join(e.stage for e in externalized)}"):
                for expert in externalized:
                    rel = f"adapters/{expert.stage}.onnx_adapter"
                    write_onnx_adapter(expert, slots, staging / rel)
                    expert_entries[expert.stage] = {"mode": "externalized", "file": rel, **expert.manifest_entry()}
        for expert in merged:
            with steps.step(f"merge expert {expert.stage!r} into its own model"):
                merged_hf = merge_expert(config.base, expert.path, work / f"merged_hf_{expert.stage}")
                run_builder(merged_hf, work / f"merged_{expert.stage}", builder_config, base=base)
                _copy_model_dir(work / f"merged_{expert.stage}", staging / "merged" / expert.stage, skip_model=False)
                if config.last_token_logits:
                    rewrite_model_file(staging / "merged" / expert.stage / "model.onnx")
                shutil.rmtree(merged_hf, ignore_errors=True)
                expert_entries[expert.stage] = {"mode": "merged", "model_dir": f"merged/{expert.stage}", **expert.manifest_entry()}
        embedder_entry = None
        if config.embedder is not None:
            with steps.step("export the embedder" + (" (int8)" if config.embedder.int8 else "")):
                emb = export_embedder(config.embedder, staging / "embedder")
                embedder_entry = {
                    "file": f"embedder/{emb.file}",
                    "tokenizer_dir": "embedder",
                    "dim": emb.dim,
                    "int8": emb.int8,
                    "pooling": emb.pooling,
                    "normalized": True,
                    "inputs": ["input_ids", "attention_mask", "token_type_ids"],
                    "output": "sentence_embedding",
                    "with_tokenizer_file": f"embedder/{emb.with_tokenizer_file}" if emb.with_tokenizer_file else None,
                    "source": emb.source,
                }
        vision_entry = None
        if is_vlm:
            with steps.step("export the vision encoder and the text embedding (torch.onnx)"):
                from memlora.export.vlm_export import export_vision  # torch: loaded for a VLM only

                vision_entry = export_vision(config.base, staging).manifest_entry()
        with steps.step("write bundle.json (sizes + sha256) and check it"):
            manifest = {
                "created_by": created_by(),
                "base": {
                    "architecture": base.architecture,
                    "model_type": base.model_type,
                    "num_layers": base.num_layers,
                    "precision": builder_config.precision,
                    "builder_options": builder_config.chosen_options(),
                    "last_token_logits": config.last_token_logits,
                    "dir": "model",
                    "lora_union": union.ranks,
                    "lora_union_layers": ({m: ls for m, ls in union.layers.items() if len(ls) < decoder_base.num_layers}
                                          if config.union_layers == "used" else {}),
                    "source": str(config.base.resolve()),
                },
                "experts": {stage: expert_entries[stage] for stage in [e.stage for e in experts]},
                "embedder": embedder_entry,
                "chat": chat_entry(staging / "model"),
                **({"vision": vision_entry} if vision_entry else {}),
                "files": list_files(staging),
                "toolchain": toolchain_versions(),
            }
            write_manifest(staging, manifest)
            load_bundle(staging, verify=False)
        with steps.step(f"move the bundle into place at {output}"):
            _commit(staging, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _commit(staging: Path, output: Path) -> None:
    """Rename ``staging`` to ``output``; an existing ``output`` is moved aside first and deleted only after the rename."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        os.replace(output, old)
    try:
        os.replace(staging, output)
    except OSError:
        if old is not None:
            os.replace(old, output)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
