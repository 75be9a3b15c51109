"""Read the experts in ``out/`` (one peft LoRA dir per stage) and check each one fits the base model.

Refused with ``AdapterError`` before anything is written: DoRA and other LoRA variants the graph cannot express, non-LoRA peft
types, trained biases or extra trainable modules, target modules outside the supported projections, and adapters trained on
another base (a LoRA matrix whose shape does not match the base model's layer).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memlora import STAGES
from memlora.errors import AdapterError
from memlora.export.base_model import LORA_MODULES, BaseModelInfo
from memlora.runtime.bundle import load_bundle

DEFAULT_MAX_NEW_TOKENS = {"extraction": 256, "update": 256, "generation": 64, "vqa": 32}
"""Generation length per stage when neither ``experts.json`` nor the training card says otherwise."""

_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<path>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")
_LAYER_MODULE = re.compile(r"(?:^|\.)layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>[a-z_]+_proj)$")

CARD_FILE = "training_card.json"
"""The training card ``memlora-train`` writes into every expert dir."""


@dataclass
class LoraModule:
    """One (layer, projection) an expert adapts: the peft matrices and their scaling."""

    path: str
    """Base module path, e.g. ``model.layers.0.self_attn.q_proj``."""
    layer: int
    module: str
    rank: int
    alpha: float
    scaling: float
    """alpha / r, or alpha / sqrt(r) for rsLoRA."""
    lora_A: np.ndarray
    """peft layout [r, in]."""
    lora_B: np.ndarray
    """peft layout [out, r]."""


@dataclass
class Expert:
    """A trained expert adapter, validated against the base model."""

    stage: str
    path: Path
    target_modules: list[str]
    """Projection names the adapter touches (sorted)."""
    rank: int
    """The configured rank ``r`` (per-module ranks are in ``modules``)."""
    alpha: float
    use_rslora: bool
    modules: dict[str, LoraModule] = field(default_factory=dict)
    prompt_set: str = "memlora"
    max_new_tokens: int = 64

    @property
    def ranks(self) -> dict[str, int]:
        """Projection -> largest rank used for it."""
        out: dict[str, int] = {}
        for mod in self.modules.values():
            out[mod.module] = max(out.get(mod.module, 0), mod.rank)
        return dict(sorted(out.items(), key=lambda kv: LORA_MODULES.index(kv[0])))

    def manifest_entry(self) -> dict:
        return {
            "stage": self.stage,
            "target_modules": self.target_modules,
            "rank": self.rank,
            "ranks": self.ranks,
            "alpha": self.alpha,
            "use_rslora": self.use_rslora,
            "prompt_set": self.prompt_set,
            "generation": {"max_new_tokens": self.max_new_tokens},
        }


def _refuse_unsupported(config: dict, where: Path) -> None:
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterError(f"{where}: peft type {peft_type or '?'} is not supported; only plain LoRA adapters can be exported")
    checks = [
        (config.get("use_dora"), "DoRA (use_dora=true) cannot be expressed in the multi-LoRA graph; retrain without DoRA"),
        (config.get("lora_bias"), "lora_bias=true (a trained LoRA bias) is not supported"),
        (config.get("bias", "none") not in (None, "none"), f"bias={config.get('bias')!r}: trained biases are not supported"),
        (config.get("modules_to_save"), f"modules_to_save={config.get('modules_to_save')} (fully trained modules) are not supported"),
        (config.get("trainable_token_indices"), "trainable_token_indices is not supported"),
        (config.get("target_parameters"), "target_parameters is not supported"),
        (config.get("alora_invocation_tokens"), "aLoRA (alora_invocation_tokens) is not supported"),
        (config.get("use_qalora"), "QA-LoRA is not supported"),
        (config.get("use_bdlora"), "BD-LoRA is not supported"),
        (config.get("fan_in_fan_out"), "fan_in_fan_out=true (Conv1D models) is not supported"),
    ]
    for bad, message in checks:
        if bad:
            raise AdapterError(f"{where}: {message}")
    targets = config.get("target_modules")
    if isinstance(targets, (list, tuple)):
        unknown = sorted(str(t) for t in targets if str(t).rsplit(".", 1)[-1] not in LORA_MODULES)
        if unknown:
            raise AdapterError(
                f"{where}: target module(s) {', '.join(unknown)} not supported (supported: {', '.join(LORA_MODULES)})"
            )


def _pattern_value(patterns: dict, module_path: str, default):
    from peft.utils.other import get_pattern_key

    if not patterns:
        return default
    key = get_pattern_key(list(patterns.keys()), module_path)
    return patterns.get(key, default)


def read_expert(adapter_dir: str | Path, stage: str, base: BaseModelInfo | None) -> Expert:
    """Load one peft LoRA dir and validate it against ``base``; raises ``AdapterError`` with the reason.

    With ``base=None`` (adding to an existing bundle) shapes are checked later, against the bundle's graph inputs.
    """
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    if not _STAGE_NAME.match(stage):
        raise AdapterError(f"stage name {stage!r} is not a plain name (letters, digits, _ . -)")
    config_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file():
        raise AdapterError(f"{adapter_dir}: no adapter_config.json (not a peft adapter dir)")
    if not weights_path.is_file():
        raise AdapterError(f"{adapter_dir}: no adapter_model.safetensors (only safetensors adapters are supported)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{config_path}: not valid JSON ({exc})") from None
    _refuse_unsupported(config, adapter_dir)

    r_default = int(config.get("r", 8))
    alpha_default = float(config.get("lora_alpha", 8))
    use_rslora = bool(config.get("use_rslora", False))
    tensors = load_file(str(weights_path))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = _PEFT_KEY.match(key)
        if not match:
            raise AdapterError(f"{adapter_dir}: unexpected tensor {key!r} (only lora_A/lora_B weights can be exported)")
        pairs.setdefault(match["path"], {})[match["ab"]] = value.float().numpy()  # bf16/fp16 adapters too

    expert = Expert(stage=stage, path=adapter_dir, target_modules=[], rank=r_default, alpha=alpha_default, use_rslora=use_rslora)
    for path, ab in sorted(pairs.items()):
        leaf = path.rsplit(".", 1)[-1]
        if leaf not in LORA_MODULES:
            raise AdapterError(
                f"{adapter_dir}: adapts {path!r}, which is not a supported target module (supported: {', '.join(LORA_MODULES)})"
            )
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{adapter_dir}: {path} has lora_{'A' if 'A' in ab else 'B'} but not its partner matrix")
        lora_A, lora_B = ab["A"], ab["B"]
        rank = lora_A.shape[0]
        if base is not None:
            linear = base.linears.get(path)
            if linear is None:
                raise AdapterError(
                    f"{adapter_dir}: adapts {path!r}, which the base model {base.path} does not have "
                    f"(an adapter trained on another base model?)"
                )
            layer, in_features, out_features = linear.layer, linear.in_features, linear.out_features
        else:
            match = _LAYER_MODULE.search(path)
            if match is None:
                raise AdapterError(f"{adapter_dir}: cannot tell the layer of {path!r} (expected ...layers.N.self_attn|mlp.X_proj)")
            layer, in_features, out_features = int(match["layer"]), lora_A.shape[1], lora_B.shape[0]
        if lora_A.ndim != 2 or lora_B.ndim != 2 or lora_A.shape != (rank, in_features) or lora_B.shape != (out_features, rank):
            raise AdapterError(
                f"{adapter_dir}: {path} has lora_A {list(lora_A.shape)} / lora_B {list(lora_B.shape)} but the base layer is "
                f"[out={out_features}, in={in_features}]: this adapter was trained on another base model"
            )
        expected_rank = int(_pattern_value(config.get("rank_pattern") or {}, path, r_default))
        if rank != expected_rank:
            raise AdapterError(f"{adapter_dir}: {path} has rank {rank} but adapter_config.json says {expected_rank}")
        alpha = float(_pattern_value(config.get("alpha_pattern") or {}, path, alpha_default))
        scaling = alpha / math.sqrt(rank) if use_rslora else alpha / rank
        expert.modules[path] = LoraModule(path, layer, leaf, rank, alpha, scaling, lora_A, lora_B)
    if not expert.modules:
        raise AdapterError(f"{adapter_dir}: the adapter holds no LoRA weights")
    expert.target_modules = sorted({m.module for m in expert.modules.values()}, key=LORA_MODULES.index)
    return expert


@dataclass
class ExpertSpec:
    """Where an expert lives in ``out/`` and how it is run."""

    stage: str
    path: Path
    prompt_set: str = "memlora"
    max_new_tokens: int | None = None


def discover_experts(adapters_dir: str | Path) -> list[ExpertSpec]:
    """The experts in ``out/``: from ``experts.json`` when present, else every subdir holding an adapter_config.json."""
    adapters_dir = Path(adapters_dir)
    if not adapters_dir.is_dir():
        raise AdapterError(f"{adapters_dir}: adapters directory not found")
    manifest = adapters_dir / "experts.json"
    specs: list[ExpertSpec] = []
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            for stage, entry in data["experts"].items():
                rel = Path(entry.get("path", stage))
                if rel.is_absolute() or ".." in rel.parts:
                    raise AdapterError(f"{manifest}: expert path {rel} must be relative and inside {adapters_dir}")
                specs.append(
                    ExpertSpec(stage, adapters_dir / rel, entry.get("prompt_set", "memlora"), entry.get("max_new_tokens"))
                )
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise AdapterError(f"{manifest}: malformed experts manifest ({exc!r})") from None
    else:
        for sub in sorted(adapters_dir.iterdir()):
            if (sub / "adapter_config.json").is_file():
                specs.append(ExpertSpec(sub.name, sub))
    order = {stage: i for i, stage in enumerate(STAGES)}
    specs.sort(key=lambda s: (order.get(s.stage, len(order)), s.stage))
    return specs


def experts_prompt_set(adapters_dir: str | Path) -> str:
    """The one prompt set the experts in ``out/`` were trained with (``experts.json``; "memlora" when it names none).
    A ``Memory`` renders every stage with one set, so experts that disagree are refused."""
    sets = {spec.prompt_set for spec in discover_experts(adapters_dir)}
    if len(sets) > 1:
        raise AdapterError(f"{adapters_dir}: the experts were trained with different prompt sets ({', '.join(sorted(sets))}); "
                           "one memory loop renders every stage with one set")
    return sets.pop() if sets else "memlora"


def trained_prompt_set(adapters_dir: str | Path | None = None, bundle_dir: str | Path | None = None) -> str:
    """The prompt set to render with for these experts: that of ``adapters_dir``'s experts (``experts_prompt_set``), else
    the one ``bundle_dir``'s experts share (what ``Memory.from_bundle`` picks), else "memlora"."""
    if adapters_dir is not None:
        return experts_prompt_set(adapters_dir)
    if bundle_dir is not None:
        return load_bundle(bundle_dir, verify=False).shared_prompt_set() or "memlora"
    return "memlora"


def _card_max_new_tokens(adapter_dir: Path) -> int | None:
    card = adapter_dir / CARD_FILE
    if not card.is_file():
        return None
    try:
        data = json.loads(card.read_text())
    except json.JSONDecodeError:
        return None
    value = data.get("max_new_tokens") or (data.get("generation") or {}).get("max_new_tokens")
    return int(value) if value else None


def read_experts(adapters_dir: str | Path, base: BaseModelInfo) -> list[Expert]:
    """Read and validate every expert in ``out/``; the first bad one raises ``AdapterError``."""
    specs = discover_experts(adapters_dir)
    experts = []
    for spec in specs:
        expert = read_expert(spec.path, spec.stage, base)
        expert.prompt_set = spec.prompt_set
        expert.max_new_tokens = int(
            spec.max_new_tokens or _card_max_new_tokens(spec.path) or DEFAULT_MAX_NEW_TOKENS.get(spec.stage, 64)
        )
        experts.append(expert)
    return experts
