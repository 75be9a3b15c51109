"""The experts shipped inside the package: trained on data the project may redistribute, stored as small fp16 files.

``train_shipped_experts`` is the one recipe that builds ``memlora/data/experts/<model>/``:

1. data: the project's hand-written natural-English conversations (``memlora.world.natural``: 36 train / 4 val) mixed
   with as many examples of the synthetic world (``export_natural_jsonl``), rendered with the compact prompts;
2. one LoRA expert per loop stage on the pulled base (``train_expert``: resumable, a stage already trained is skipped);
3. packaging: each adapter's weights cast to fp16 (``adapter_model.safetensors``), its peft config and training card
   (which names the base by its ``memlora pull`` name), and ``experts.json`` listing every file's sha256 and the
   command that rebuilt them.

Nothing of LoCoMo is used (CC BY-NC 4.0): the kept-aside natural demo conversation is never trained on, so
``memlora demo`` shows how the experts do on conversations nobody templated. ``check_shipped_experts`` verifies a
directory against its manifest (one ``AdapterError`` line on any mismatch).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from memlora import LOOP_STAGES
from memlora.corpus.dataset import write_json_atomic
from memlora.distill.recipes import stage_configs, train_stages
from memlora.distill.train import TrainConfig
from memlora.errors import AdapterError, DataError
from memlora.export.adapters import CARD_FILE
from memlora.paths import data_file
from memlora.runtime.bundle import sha256_file
from memlora.world.generator import WorldConfig
from memlora.world.natural_examples import describe_counts, export_natural_jsonl

SHIPPED_FORMAT = 1
"""Version of the shipped ``experts.json`` (format 1 of the experts contract plus ``files``, ``base_model``, ``command``)."""
SHIPPED_DATA_LICENCE = ("Apache-2.0: memlora's own natural-English conversations (memlora/data/natural) and its synthetic "
                        "world's ground truth; no third-party data")
"""What every shipped expert's training card records as ``data_licence``."""
SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors", CARD_FILE)
"""The files of one shipped expert (checksummed in ``experts.json``)."""
_DATA_STAMP = "shipped_data.json"


def shipped_dir(model: str) -> Path:
    """Where the package keeps the experts of ``model`` (``memlora/data/experts/<model>``; may not exist)."""
    return data_file(f"experts/{model}")


def _default_train() -> TrainConfig:
    return TrainConfig(lr=1e-3, lr_schedule="cosine", warmup_steps=10, max_epochs=4, patience=1, bucket_by_length=True)


@dataclass
class ShippedExpertsConfig:
    """What ``train_shipped_experts`` trains and packages."""

    model: str = "smollm2-135m-instruct"
    """The ``memlora pull`` name of the base (recorded in the cards, so ``memlora-export`` finds it on any machine)."""
    stages: tuple[str, ...] = LOOP_STAGES
    """Experts to build (extraction, update, generation)."""
    world_ratio: float = 1.0
    """Synthetic-world examples per natural example in train and val (the world teaches the format, the natural
    conversations the language)."""
    world_seed: int = 0
    """Seed of the world mixed in."""
    update_distractor_copies: int = 1
    """Copies of the natural update examples whose stores also hold other conversations' facts (2-6 distractor
    memories each; ``distractor_update_examples``), added to the train split: without them the update expert, shown
    more than two memories, answered with the first one instead of adding the new fact."""
    train: TrainConfig = field(default_factory=_default_train)
    """Training settings shared by the stages (r16 alpha 32, lr 1e-3, cosine); ``stage`` is set per expert."""
    per_stage: dict[str, dict] = field(default_factory=lambda: {"update": {"max_epochs": 3},
                                                                "generation": {"max_epochs": 3,
                                                                               "target_modules": ["q_proj", "v_proj"]}})
    """Per-stage ``TrainConfig`` overrides (the generation expert is q,v like the others: an all-linear LoRA on every
    layer cost a quarter of the int4 graph's decode speed, and on the top 8 layers only it ended at twice the validation loss)."""
    dtype: str = "float16"
    """Storage dtype of the shipped LoRA weights (float16 or float32)."""
    max_examples: int | None = None
    """At most N examples per stage and split (smoke runs; None: all)."""
    command: str = ""
    """The command line that runs this recipe (written into ``experts.json``)."""


def build_shipped_data(data_dir: Path, config: ShippedExpertsConfig, echo: Callable[[str], None] = print) -> None:
    """``data_dir/<split>/<stage>.jsonl``: the natural conversations plus the world mix (skipped when already built
    with the same settings)."""
    settings = {"world_ratio": config.world_ratio, "world_seed": config.world_seed,
                "update_distractor_copies": config.update_distractor_copies,
                "natural": {split: sha256_file(data_file(f"natural/{split}.json"))
                            for split in ("train", "val", "demo")}}
    stamp = data_dir / _DATA_STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        echo(f"data: reusing {data_dir}")
        return
    counts = export_natural_jsonl(data_dir, config.world_ratio, WorldConfig(seed=config.world_seed),
                                  update_distractor_copies=config.update_distractor_copies)
    for split in ("train", "val"):
        echo(f"data: {split}: {describe_counts(counts[split])}")
    write_json_atomic(stamp, settings)


def package_expert(trained: Path, dest: Path, model: str, dtype: str) -> dict[str, str]:
    """Copy one trained expert into ``dest`` with its weights cast to ``dtype``; returns ``{file: sha256}``."""
    import torch
    from safetensors.torch import load_file, save_file

    torch_dtype = {"float16": torch.float16, "float32": torch.float32}.get(dtype)
    if torch_dtype is None:
        raise DataError(f"shipped dtype must be float16 or float32, got {dtype!r}")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = load_file(str(trained / "adapter_model.safetensors"))
    save_file({k: v.to(torch_dtype).contiguous() for k, v in sorted(tensors.items())}, str(tmp / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    peft_config = json.loads((trained / "adapter_config.json").read_text())
    peft_config["base_model_name_or_path"] = model  # the pull name, not this machine's path
    write_json_atomic(tmp / "adapter_config.json", peft_config)
    card = json.loads((trained / CARD_FILE).read_text())
    card["base_model"] = {**card["base_model"], "dir": None, "pull": model}  # resolved on the user's machine
    card["data_licence"], card["data_source"] = SHIPPED_DATA_LICENCE, "memlora-natural+world"
    card["stored_dtype"] = dtype
    write_json_atomic(tmp / CARD_FILE, card)
    files = {name: sha256_file(tmp / name) for name in SHIPPED_FILES}
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return files


def train_shipped_experts(base_dir: str | Path, out_dir: str | Path, work_dir: str | Path,
                          config: ShippedExpertsConfig | None = None, echo: Callable[[str], None] = print) -> Path:
    """Build the shipped experts of ``config.model`` into ``out_dir`` (training in ``work_dir``); returns experts.json.

    Rerunning continues where a run stopped: the data and every trained stage are reused."""
    cfg = config or ShippedExpertsConfig()
    base_dir, out_dir, work_dir = Path(base_dir), Path(out_dir), Path(work_dir)
    if not base_dir.is_dir():
        raise DataError(f"base model dir not found: {base_dir} (run `memlora pull {cfg.model}`)")
    configs = stage_configs(cfg)
    kept = _kept_experts(out_dir, cfg.stages)  # checked before anything is trained or replaced
    data_dir = work_dir / "data"
    build_shipped_data(data_dir, cfg, echo)
    train_stages(base_dir, data_dir, work_dir, cfg.stages, configs, echo, cfg.max_examples)
    out_dir.mkdir(parents=True, exist_ok=True)
    experts, tokenizers = {}, set()
    for entry in kept.values():
        tokenizers.add(json.loads((out_dir / entry["path"] / CARD_FILE).read_text())["tokenizer_sha256"])
    for stage in cfg.stages:
        files = package_expert(work_dir / stage, out_dir / stage, cfg.model, cfg.dtype)
        card = json.loads((out_dir / stage / CARD_FILE).read_text())
        tokenizers.add(card["tokenizer_sha256"])
        experts[stage] = {"path": stage, "prompt_set": "memlora", "max_new_tokens": card["suggested_max_new_tokens"],
                          "files": files}
    experts = {stage: (experts.get(stage) or kept[stage]) for stage in LOOP_STAGES if stage in experts or stage in kept}
    if len(tokenizers) != 1:
        raise DataError(f"the experts in {work_dir} were trained with different tokenizers: retrain them on one base")
    manifest = {"format": SHIPPED_FORMAT, "experts": experts,
                "base_model": {"pull": cfg.model, "tokenizer_sha256": tokenizers.pop()},
                "data_licence": SHIPPED_DATA_LICENCE, "command": cfg.command}
    path = out_dir / "experts.json"
    write_json_atomic(path, manifest)
    total = sum((out_dir / e["path"] / "adapter_model.safetensors").stat().st_size for e in experts.values())
    echo(f"wrote {path} ({len(experts)} experts" + (f", {', '.join(kept)} kept as they were" if kept else "")
         + f", {total / 1e6:.1f} MB of {cfg.dtype} weights)")
    return path


def _kept_experts(out_dir: Path, stages: tuple[str, ...]) -> dict[str, dict]:
    """The experts.json entries of ``out_dir`` for the stages not rebuilt, each file checked against its sha256 (none
    when ``out_dir`` has no experts.json yet)."""
    if not (out_dir / "experts.json").is_file():
        return {}
    manifest = check_shipped_experts(out_dir)
    return {stage: entry for stage, entry in manifest["experts"].items() if stage not in stages}


def check_shipped_experts(experts_dir: str | Path) -> dict:
    """Verify every file ``experts.json`` lists against its sha256; returns the manifest, or raises one AdapterError line."""
    experts_dir = Path(experts_dir)
    path = experts_dir / "experts.json"
    try:
        manifest = json.loads(path.read_text())
        entries = manifest["experts"].items()
    except FileNotFoundError:
        raise AdapterError(f"{path} not found: not a shipped experts directory") from None
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
        raise AdapterError(f"{path}: malformed experts manifest ({exc!r})") from None
    for stage, entry in entries:
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict) or not files:
            raise AdapterError(f"{path}: expert {stage} lists no file checksums")
        for name, expected in files.items():
            file = experts_dir / entry.get("path", stage) / name
            if not file.is_file():
                raise AdapterError(f"{file} is missing (listed in {path}): reinstall memlora or rebuild the experts")
            if sha256_file(file) != expected:
                raise AdapterError(f"{file} does not match its sha256 in {path}: the file is corrupt or was changed")
    return manifest
