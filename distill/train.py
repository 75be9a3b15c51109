"""Train one expert adapter (paper 3.2, D.3): peft LoRA on the student, loss on the completion tokens only.

Each example's prompt is rendered with the student's own chat template plus the generation prompt (exactly what the
engines feed the model at run time); the target follows, closed by the tokenizer's EOS token. Prompt tokens are masked
with -100, so only the completion is learned. Training runs epochs of AdamW with early stopping on the validation
teacher-forcing loss; the best epoch's LoRA weights are kept. Written to ``out_dir`` (atomically, via a temporary dir):

- a standard peft adapter dir (``adapter_config.json`` + ``adapter_model.safetensors``),
- ``training_card.json`` (data hashes, hyper-parameters, per-epoch losses, best epoch, tokens/s, versions),
- ``loss_curve.png``.

Speed (``TrainConfig``): the LM head on the target positions only (``memlora.distill.loss``), bf16 autocast where the
hardware has it, fast LoRA dropout masks on CPU (``memlora.distill.dropout``), optional LoRA on the top N layers with
the frozen layers below run once per example (``memlora.distill.frozen_layers``) and length-bucketed batches
(``memlora.distill.batching``). A
checkpoint (``memlora.distill.checkpoint``) is written into ``out_dir`` every few minutes; rerunning the same call
continues from it.

One process on CPU, or several GPUs with ``accelerate launch -m memlora.distill.cli train ...``: device placement,
gradient sync and loss reduction go through ``accelerate.Accelerator``; only the main process writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, Sequence

import memlora
from memlora import STAGES
from memlora.corpus.dataset import examples_hash, load_examples, render_prompt, validate_example, write_json_atomic
from memlora.distill.attention import LengthSwitchedAttention
from memlora.distill.batching import LengthBucketBatchSampler
from memlora.distill.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    run_key,
    save_checkpoint,
    set_rng_state,
)
from memlora.distill.dropout import use_fast_lora_dropout
from memlora.distill.frozen_layers import FrozenLayerCache, cache_bytes
from memlora.distill.loss import causal_lm_loss, masked_loss_sum, target_only_supported
from memlora.distill.vqa_train import VisionExampleEncoder, collate_vision
from memlora.errors import DataError, MemloraError
from memlora.export.adapters import CARD_FILE
from memlora.export.int4_reference import quantize_like_int4_bundle
from memlora.extras import has_module
from memlora.runtime.cpu import cpu_info

__all__ = [
    "TrainConfig",
    "AuxiliaryLoss",
    "TrainResult",
    "EpochLog",
    "train_expert",
    "load_examples",
    "default_target_modules",
    "encode_example",
    "tokenizer_fingerprint",
    "teacher_forcing_loss",
]

ATTENTION_QV = ("q_proj", "v_proj")
"""D.3: LoRA on the query and value projections is enough for extraction and update."""


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(config: TrainConfig, total_steps: int, step: int) -> float:
    """The learning rate at optimiser ``step`` as a fraction of ``config.lr``: linear warm-up, then constant or a
    cosine decay that reaches 0 after ``total_steps``."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def default_target_modules(stage: str) -> list[str] | str:
    """The paper's choice (D.3): q_proj,v_proj for extraction/update; all linear layers for generation and vqa."""
    return list(ATTENTION_QV) if stage in ("extraction", "update") else "all-linear"


@dataclass
class TrainConfig:
    """Hyper-parameters of one expert's LoRA training (defaults follow the paper where it is legible)."""

    stage: str = "extraction"
    """Memory operation this expert serves: extraction, update, generation or vqa."""
    target_modules: list[str] | str | None = None
    """Modules that get LoRA (list of names or "all-linear"); None = the stage's default (D.3)."""
    rank: int = 16
    """LoRA rank r."""
    alpha: int = 32
    """LoRA alpha (scaling = alpha / r)."""
    dropout: float = 0.1
    """LoRA dropout."""
    lr: float = 2e-4
    """AdamW learning rate."""
    batch_size: int = 8
    """Examples per optimiser step (per process; times gradient_accumulation)."""
    gradient_accumulation: int = 1
    """Micro-batches accumulated before each optimiser step."""
    max_epochs: int = 10
    """Upper bound on epochs (early stopping usually ends sooner)."""
    patience: int = 2
    """Stop after this many epochs without a validation-loss improvement."""
    min_delta: float = 0.0
    """A validation loss must improve by more than this to count as better."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    lr_schedule: str = "constant"
    """After warm-up: "constant", or "cosine" (decays to 0 at the last step of ``max_epochs``; an early stop ends it
    sooner)."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping norm (None: no clipping)."""
    seed: int = 0
    """Seed for LoRA init, dropout and data order (runs are repeatable)."""
    precision: str = "auto"
    """auto (bf16 autocast on GPUs and CPUs with native bf16, else fp32), bf16 or fp32."""
    target_only_head: bool = True
    """Run the LM head on the completion positions only (same loss, no prompt logits); text-only models, one process."""
    lora_top_layers: int | None = None
    """LoRA on the top N decoder layers only (None: every layer); faster, since backward stops below them."""
    fast_dropout: bool = True
    """On CPU: LoRA dropout masks from numpy's SFC64 seeded by torch's RNG (``memlora.distill.dropout``), not torch's
    scalar generator; same distribution, a different random stream. GPUs keep torch's dropout."""
    cache_frozen_layers: bool = True
    """With lora_top_layers: run the frozen layers below the LoRA once per example, not once per epoch
    (``memlora.distill.frozen_layers``; same result, RAM: tokens x hidden x 4 bytes). Text students, one process."""
    frozen_cache_max_gb: float = 8.0
    """Largest frozen-layer cache (train + validation) kept in RAM; beyond it every epoch runs all layers."""
    eager_attention_max_length: int = 0
    """On CPU, for a base loaded with SDPA: batches whose rows are at most this many tokens run eager attention, faster
    there for short rows (``memlora.distill.attention``; 512 measured best); 0 (default): always the loaded
    implementation. Opt-in: under bf16 eager rounds the attention scores to bf16 before the softmax."""
    bucket_by_length: bool = False
    """Batch examples of similar length together (less padding; the batches are less random)."""
    base_int4_block: int | None = None
    """Train against the int4 bundle's weights: the frozen base's decoder linears, LM head and embeddings replaced by
    their symmetric int4 round trip with this block size (``memlora.export.int4_reference``, QLoRA-style); None: the
    fp32 weights. The saved expert is a plain LoRA on the original base."""
    checkpoint_every_minutes: float | None = 5.0
    """Write a resumable checkpoint into the output dir this often (None: only by checkpoint_every_steps)."""
    checkpoint_every_steps: int | None = None
    """Also checkpoint every N optimiser steps (None: by time only)."""
    resume: bool = True
    """Continue from the output dir's checkpoint of the same run, if there is one."""
    max_length: int | None = None
    """Longest allowed prompt+target in tokens; None = the model's context (max_position_embeddings)."""
    drop_too_long: bool = False
    """Drop examples longer than max_length instead of failing."""
    eval_batch_size: int | None = None
    """Batch size for validation loss (None: 2 x batch_size)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory on big students."""
    threads: int | None = None
    """torch CPU threads (None: leave torch's default)."""
    cpu: bool = False
    """Force CPU even when a GPU is present."""
    plot: bool = True
    """Write loss_curve.png."""
    progress: bool = True
    """Show a progress bar."""

    def resolved_target_modules(self) -> list[str] | str:
        return self.target_modules if self.target_modules else default_target_modules(self.stage)

    def validate(self) -> "TrainConfig":
        if self.stage not in STAGES:
            raise MemloraError(f"unknown stage {self.stage!r}: expected one of {', '.join(STAGES)}")
        for name in ("rank", "alpha", "batch_size", "gradient_accumulation", "max_epochs"):
            if int(getattr(self, name)) < 1:
                raise MemloraError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0 or not (0.0 <= self.dropout < 1.0) or self.lr <= 0:
            raise MemloraError("TrainConfig: need patience >= 0, 0 <= dropout < 1 and lr > 0")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise MemloraError(f"TrainConfig.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise MemloraError(f"TrainConfig.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lora_top_layers is not None and int(self.lora_top_layers) < 1:
            raise MemloraError(f"TrainConfig.lora_top_layers must be >= 1 (or None for every layer), got {self.lora_top_layers}")
        if self.base_int4_block is not None and (int(self.base_int4_block) < 16 or int(self.base_int4_block) % 16):
            raise MemloraError(f"TrainConfig.base_int4_block must be a multiple of 16 (the builder's 16..256), got {self.base_int4_block}")
        if int(self.eager_attention_max_length) < 0:
            raise MemloraError(f"TrainConfig.eager_attention_max_length must be >= 0, got {self.eager_attention_max_length}")
        if self.checkpoint_every_steps is not None and int(self.checkpoint_every_steps) < 1:
            raise MemloraError(f"TrainConfig.checkpoint_every_steps must be >= 1, got {self.checkpoint_every_steps}")
        if isinstance(self.target_modules, str) and self.target_modules not in ("all-linear",):
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        return self


@dataclass
class EpochLog:
    """Losses of one epoch (epoch 0 = before training)."""

    epoch: int
    train_loss: float | None
    val_loss: float | None
    seconds: float = 0.0
    train_tokens: int = 0
    aux_loss: float | None = None
    """Mean auxiliary loss of the epoch's batches, unweighted (None: no auxiliary loss)."""


class AuxiliaryLoss(Protocol):
    """An extra loss ``train_expert`` adds to the next-token loss: ``loss = out.loss + weight * aux(out, batch)``.

    The trainer knows only this interface; losses that serve one use (the synthetic world's copy-attention loss,
    ``memlora.world.copy_attention``) live with that use, the way peft keeps its variants outside its core."""

    weight: float
    """Factor of the auxiliary loss in the training loss."""
    attn_implementation: str | None
    """Attention implementation the base must be loaded with (``"eager"`` to read attention probabilities), or None."""
    forward_kwargs: dict
    """Extra keyword arguments of the model's forward pass (``{"output_attentions": True}``)."""

    def prepare(self, tokenizer, model_config) -> None:
        """Check that the loss fits this tokenizer and model before training; raise ``MemloraError`` if not."""

    def __call__(self, outputs, batch: dict) -> Any:
        """The unweighted loss (a scalar tensor) of one batch's forward ``outputs``."""

    def hyperparameters(self) -> dict:
        """Its options, recorded in the training card's hyperparameters."""


@dataclass
class TrainResult:
    """What ``train_expert`` produced."""

    out_dir: Path
    best_epoch: int
    best_val_loss: float | None
    initial_val_loss: float | None
    epochs: list[EpochLog] = field(default_factory=list)
    tokens_per_s: float = 0.0
    stopped_early: bool = False
    card: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------------
# tokenisation


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's vocabulary + special tokens (same tokenizer <=> same fingerprint)."""
    vocab = tokenizer.get_vocab()
    blob = json.dumps(
        {"vocab": sorted(vocab.items(), key=lambda kv: kv[1]), "eos": tokenizer.eos_token, "pad": tokenizer.pad_token},
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def load_tokenizer(base_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    base_dir = Path(base_dir)
    if not (base_dir / "config.json").is_file():
        raise MemloraError(f"base model not found: {base_dir} has no config.json (pass a local model directory)")
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    if not getattr(tok, "chat_template", None):
        raise MemloraError(f"the tokenizer in {base_dir} has no chat template: experts are trained on chat prompts")
    if tok.eos_token_id is None:
        raise MemloraError(f"the tokenizer in {base_dir} has no EOS token: the student could never stop")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def encode_example(tokenizer, example: dict, lead_space: bool = False) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example: prompt tokens labelled -100, then target tokens + EOS. ``lead_space``: the
    target is encoded as `` <target>`` (its first word then tokenizes as in running text)."""
    prompt_ids = tokenizer(render_prompt(tokenizer, example["messages"]), add_special_tokens=False)["input_ids"]
    target = (" " + example["target"]) if lead_space else example["target"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def _context_length(model_config) -> int | None:
    cfg = getattr(model_config, "text_config", None) or model_config
    return getattr(cfg, "max_position_embeddings", None)


def encode_examples(tokenizer, examples: Sequence[dict], max_length: int | None, drop_too_long: bool, what: str,
                    vision=None, lead_space: bool = False):
    encoded, dropped = [], 0
    for ex in examples:
        if vision is not None and ex.get("images"):  # (ids, labels, pixel tensors) from the VLM's processor
            row = vision.encode(tokenizer, ex)
            ids = row[0]
            if max_length is not None and len(ids) > max_length and drop_too_long:
                dropped += 1
                continue
            encoded.append(row)
            continue
        ids, labels = encode_example(tokenizer, ex, lead_space)
        if max_length is not None and len(ids) > max_length:
            if drop_too_long:
                dropped += 1
                continue
            raise DataError(
                f"{what} example {ex.get('id')!r} is {len(ids)} tokens (prompt + target + EOS), longer than the "
                f"model's context of {max_length}: shorten it, raise --max-length, or pass --drop-too-long"
            )
        encoded.append((ids, labels))
    return encoded, dropped


def check_examples(examples: Sequence[dict], stage: str, tokenizer_sha: str, what: str, allow_images: bool = False) -> None:
    """Shape, stage and tokenizer checks: mismatches are the user's to fix, so they raise ``DataError``."""
    for i, ex in enumerate(examples):
        validate_example(ex, f"{what} example {i}")
        if ex["stage"] != stage:
            raise DataError(f"{what} example {ex['id']!r} is for stage {ex['stage']!r}, not {stage!r}")
        if ex.get("images") and not allow_images:
            raise DataError(
                f"{what} example {ex['id']!r} carries images: image-conditioned VQA training needs a vision-language "
                "processor, which this text trainer does not feed (train VQA on text prompts or use the VLM trainer)"
            )
        recorded = (ex.get("meta") or {}).get("tokenizer_sha256")
        if recorded and recorded != tokenizer_sha:
            raise DataError(
                f"{what} example {ex['id']!r} was prepared for a different tokenizer ({recorded[:12]}...) than the "
                f"base model's ({tokenizer_sha[:12]}...): re-run `memlora-train clean --student` for this base model"
            )


# --------------------------------------------------------------------------------------------------------------------
# training


ROW_INDEX = "row_index"
"""Batch key of the rows' positions in their dataset (``_Encoded``): what the frozen-layer cache is keyed by."""


class _Encoded:
    """Encoded rows; an item is (position, row), so a batch knows which rows it holds."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return i, self.rows[i]


def _indexed(collate):
    """A collate over (position, row) items: ``collate``'s batch plus ``ROW_INDEX``."""
    import torch

    def collate_indexed(items):
        batch = collate([row for _, row in items])
        batch[ROW_INDEX] = torch.tensor([i for i, _ in items], dtype=torch.long)
        return batch

    return collate_indexed


def _collate(pad_id: int):
    import torch

    def collate(rows):
        width = max(len(row[0]) for row in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, lab, *_) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            labels[r, : len(lab)] = torch.tensor(lab)
            mask[r, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        if any(len(row) > 2 for row in rows):  # image examples: memlora.distill.vqa_train.collate_vision adds pixels
            batch.update(collate_vision(rows, width))
        return batch

    return collate


def _load_base(base_dir: Path, gradient_checkpointing: bool, attn_implementation: str | None = None):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(base_dir))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, attn_implementation=attn_implementation)
    except ValueError:
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(str(base_dir), dtype=torch.float32)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model.config.use_cache = False
    return model, config


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX; ``memlora.runtime.cpu``, Linux)."""
    isa = cpu_info()["isa"]
    return "avx512_bf16" in isa or "amx_bf16" in isa


def _mixed_precision(config: TrainConfig) -> str:
    import torch

    if config.precision == "fp32":
        return "no"
    if config.precision == "bf16":
        return "bf16"
    on_gpu = (not config.cpu) and torch.cuda.is_available()
    if on_gpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_bf16() else "no"


def _decoder_linear_names(model) -> list[str]:
    """Names of the linear modules inside the decoder layers (what "all-linear" puts LoRA on), sorted."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and ".layers." in name})


def frozen_linears_to_bf16(decoder) -> int:
    """Keep the frozen linear weights of ``decoder``'s layers in bf16; returns how many linears were cast.

    What bf16 autocast does to them on every forward anyway (it keeps the casts of trainable weights only), done once:
    the same numbers, without the per-step casts, and half their memory."""
    import torch

    cast = 0
    for module in decoder.layers.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad and module.weight.dtype == torch.float32:
            module.weight.data = module.weight.data.to(torch.bfloat16)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(torch.bfloat16)
            cast += 1
    return cast


def _num_layers(model_config) -> int | None:
    cfg = getattr(model_config, "text_config", None) or model_config
    return getattr(cfg, "num_hidden_layers", None)


def _masked_loss_sums(model, loader, accelerator, autocast, target_only: bool = False, progress: bool = False,
                      replay=None) -> tuple[float, int]:
    """Teacher-forcing loss summed over completion tokens, and their count (reduced over processes). ``replay(batch)``:
    the context the forward runs in (``FrozenLayerCache.replay``; it takes ``ROW_INDEX`` out of the batch)."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad(), autocast():
        for batch in tqdm(loader, desc="validation", leave=False, disable=not progress, unit="batch"):
            with (replay or _no_replay)(batch):
                loss, count = masked_loss_sum(model, batch, target_only)
            total[0] += loss.double()
            total[1] += count
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0]), int(total[1])


def _no_replay(batch: dict):
    """Every layer runs: drop the row positions the frozen-layer cache would have read."""
    batch.pop(ROW_INDEX, None)
    return contextlib.nullcontext()


_BASE_DROPOUTS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout")
"""Config fields of a base's own dropout: non-zero, the layers below the LoRA are not constant, so nothing is cached."""


def _frozen_layer_cache(model, config: TrainConfig, layers: list[int] | None, rows: dict[str, list], usable: bool,
                        collate, autocast, progress: bool, echo) -> FrozenLayerCache | None:
    """The filled frozen-layer cache of ``rows`` ({"train": ..., "val": ...}), or None when it does not apply. ``collate``:
    the training collate (its batches carry ``ROW_INDEX``)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if not (config.cache_frozen_layers and layers and layers[0] > 0 and usable):
        return None
    decoder = model.get_base_model().get_decoder()
    dropout = {n: getattr(decoder.config, n) for n in _BASE_DROPOUTS if getattr(decoder.config, n, 0) or 0}
    if dropout:  # the frozen layers' output then changes from step to step
        echo(f"[{config.stage}] no frozen-layer cache: the base has dropout in training ({dropout})")
        return None
    size = cache_bytes([len(r[0]) for part in rows.values() for r in part], int(decoder.config.hidden_size))
    if size > config.frozen_cache_max_gb * 1e9:
        echo(f"[{config.stage}] frozen-layer cache would take {size / 1e9:.1f} GB (> frozen_cache_max_gb "
             f"{config.frozen_cache_max_gb}): every epoch runs all layers")
        return None
    cache = FrozenLayerCache(decoder, layers[0])
    batch_size = config.eval_batch_size or 2 * config.batch_size
    with torch.random.fork_rng(devices=[]):  # a DataLoader draws its seed from the global RNG: leave dropout's stream alone
        for name, part in rows.items():
            if not part:
                continue
            loader = DataLoader(_Encoded(part), batch_size=batch_size, collate_fn=collate)
            with tqdm(total=len(loader), desc=f"{config.stage} frozen layers 0-{layers[0] - 1} ({name})", unit="batch",
                      leave=False, disable=not progress) as bar:
                cache.fill(name, ((b.pop(ROW_INDEX).tolist(), b) for b in loader), autocast, bar.update)
    return cache


def teacher_forcing_loss(model, tokenizer, examples: Sequence[dict], batch_size: int = 8) -> float:
    """Mean completion-token cross-entropy of ``model`` on ``examples`` (single process helper for tests/search)."""
    import torch

    rows = [encode_example(tokenizer, ex) for ex in examples]
    collate = _collate(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start : start + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
                )
            )
            count += int((labels != -100).sum())
    return total / max(count, 1)


def _plot(epochs: list[EpochLog], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    tr = [(e.epoch, e.train_loss) for e in epochs if e.train_loss is not None]
    va = [(e.epoch, e.val_loss) for e in epochs if e.val_loss is not None]
    if tr:
        ax.plot(*zip(*tr), marker="o", label="train (completion tokens)")
    if va:
        ax.plot(*zip(*va), marker="s", label="val teacher-forcing")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary dir into place; an existing ``final`` is replaced only once the new one is complete."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def suggested_max_new_tokens(target_lengths: Sequence[int]) -> int:
    """Generation budget for the stage: 1.25 x the longest training target, between 16 and 1024 tokens."""
    return int(min(1024, max(16, math.ceil(1.25 * max(target_lengths or [16])))))


def train_expert(
    base_dir: str | os.PathLike,
    train_examples: Sequence[dict],
    val_examples: Sequence[dict],
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    aux_loss: AuxiliaryLoss | None = None,
    lead_space: bool = False,
) -> TrainResult:
    """Train one LoRA expert on ``train_examples`` with early stopping on ``val_examples``; write it to ``out_dir``.

    ``aux_loss``: an optional extra loss (``AuxiliaryLoss``) added to the next-token loss. ``lead_space``: encode each
    target as `` <target>`` (``encode_example``)."""
    import peft
    import torch
    import transformers
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    config = (config or TrainConfig()).validate()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    if not train_examples:
        raise DataError(f"no training examples for stage {config.stage!r}: nothing to learn (check the data dir)")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    tokenizer = load_tokenizer(base_dir)
    tok_sha = tokenizer_fingerprint(tokenizer)
    vision = None
    if any(ex.get("images") for ex in list(train_examples) + list(val_examples)):
        vision = VisionExampleEncoder(base_dir)  # refuses a text-only base with a clear ImageError
    check_examples(train_examples, config.stage, tok_sha, "training", allow_images=vision is not None)
    check_examples(val_examples, config.stage, tok_sha, "validation", allow_images=vision is not None)

    # bf16 through torch.autocast rather than Accelerator(mixed_precision=...): accelerate's state is one per process
    # and refuses a second precision, and tests and benchmarks train both ways in one process
    precision = _mixed_precision(config)
    accelerator = Accelerator(
        cpu=config.cpu,
        gradient_accumulation_steps=config.gradient_accumulation,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode also fills every new tensor with NaN (a check for reads of uninitialised memory): the same
    # numbers without it, and bf16 autocast's many casts made it 5-8% of a CPU step
    torch.utils.deterministic.fill_uninitialized_memory = False

    if aux_loss is not None and vision is not None:
        raise MemloraError("an auxiliary loss supervises text-only students; leave it out for image examples")
    model, model_config = _load_base(base_dir, config.gradient_checkpointing,
                                     aux_loss.attn_implementation if aux_loss is not None else None)
    if config.base_int4_block is not None:
        quantize_like_int4_bundle(model, int(config.base_int4_block))
    if aux_loss is not None:
        aux_loss.prepare(tokenizer, model_config)
    max_length = config.max_length or _context_length(model_config)
    train_rows, dropped_train = encode_examples(tokenizer, train_examples, max_length, config.drop_too_long, "training", vision,
                                                lead_space)
    val_rows, dropped_val = encode_examples(tokenizer, val_examples, max_length, config.drop_too_long, "validation", vision,
                                            lead_space)
    if not train_rows:
        raise DataError(f"every training example is longer than {max_length} tokens: nothing left to train on")

    target_modules = config.resolved_target_modules()
    if vision is not None:  # LoRA on the language model only (what the exported text decoder can carry)
        target_modules = vision.language_model_targets(model, target_modules)
    n_layers = _num_layers(model_config)
    layers = None
    if config.lora_top_layers is not None:
        if n_layers is None:
            raise MemloraError(f"--lora-top-layers: {base_dir}'s config does not say how many layers it has")
        layers = list(range(max(0, n_layers - int(config.lora_top_layers)), n_layers))
        if target_modules == "all-linear":  # peft takes layers_to_transform only with a list of module names
            target_modules = _decoder_linear_names(model)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=target_modules,
        bias="none",
        task_type="CAUSAL_LM",
        **({"layers_to_transform": layers, "layers_pattern": "layers"} if layers is not None else {}),
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise MemloraError(f"LoRA target modules {target_modules!r} do not fit {base_dir}: {exc}") from None
    fast_dropout = config.fast_dropout and config.dropout > 0 and accelerator.device.type == "cpu"
    if fast_dropout:
        use_fast_lora_dropout(model)
    # text students under bf16 autocast: the frozen linears cast once instead of on every forward
    bf16_linears = frozen_linears_to_bf16(model.get_base_model().get_decoder()) if precision == "bf16" and vision is None else 0
    attention = None
    if (config.eager_attention_max_length and accelerator.device.type == "cpu" and aux_loss is None and vision is None
            and model.get_base_model().config._attn_implementation == "sdpa"):
        attention = LengthSwitchedAttention(model.get_base_model(), config.eager_attention_max_length)
    # the head on the target positions only: text students without an auxiliary loss (which reads the full outputs),
    # in one process (the decoder is called past the DDP wrapper)
    target_only = (config.target_only_head and aux_loss is None and vision is None and accelerator.num_processes == 1
                   and target_only_supported(model))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    collate = _indexed(_collate(tokenizer.pad_token_id))
    if config.bucket_by_length:
        train_loader = DataLoader(_Encoded(train_rows), collate_fn=collate, batch_sampler=LengthBucketBatchSampler(
            [len(row[0]) for row in train_rows], config.batch_size, config.seed))
    else:
        gen = torch.Generator().manual_seed(config.seed)
        train_loader = DataLoader(_Encoded(train_rows), batch_size=config.batch_size, shuffle=True, collate_fn=collate,
                                  generator=gen)
    total_steps = math.ceil(len(train_loader) / config.gradient_accumulation) * config.max_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, config, total_steps))
    val_loader = DataLoader(_Encoded(val_rows), batch_size=config.eval_batch_size or 2 * config.batch_size, collate_fn=collate)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )

    def autocast():
        if precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16)

    frozen = _frozen_layer_cache(
        model, config, layers, {"train": train_rows, "val": val_rows},
        usable=aux_loss is None and vision is None and accelerator.num_processes == 1,
        collate=collate, autocast=autocast,
        progress=config.progress and accelerator.is_local_main_process, echo=tqdm.write)

    def replay(name: str):
        """The context a batch of split ``name`` runs its forward in: the cached frozen layers, or every layer."""
        if frozen is None:
            return _no_replay

        def context(batch: dict):
            index = batch.pop(ROW_INDEX)
            return frozen.replay(name, index.tolist(), int(batch["input_ids"].shape[1]))

        return context

    def val_loss() -> float | None:
        if not val_rows:
            return None
        s, n = _masked_loss_sums(model, val_loader, accelerator, autocast, target_only,
                                 progress=config.progress and accelerator.is_local_main_process, replay=replay("val"))
        return s / max(n, 1)

    def lora_state() -> dict:
        return {k: v.detach().to("cpu").clone() for k, v in get_peft_model_state_dict(accelerator.unwrap_model(model)).items()}

    ckpt_path = out_dir / CHECKPOINT_NAME
    key = run_key({
        "base": str(base_dir.resolve()), "tokenizer": tok_sha, "train": examples_hash(train_examples),
        "val": examples_hash(val_examples), "lead_space": lead_space, "processes": accelerator.num_processes,
        "aux": _jsonable(aux_loss.hyperparameters()) if aux_loss is not None else None,
        "config": {k: v for k, v in _jsonable(asdict(config)).items() if k not in _NOT_IN_RUN_KEY},
    })
    resumed = load_checkpoint(ckpt_path, key) if config.resume else None
    resumed_from = {"epoch": resumed["loop"]["epoch"], "batch": resumed["loop"]["batches_done"]} if resumed else None
    loop = {"epoch": 1, "batches_done": 0, "epoch_seconds": 0.0, "epoch_tokens": 0, "loss_sum": [0.0, 0.0],
            "aux_sum": 0.0, "aux_batches": 0, "epochs": None, "best_loss": None, "best_epoch": 0, "bad_epochs": 0,
            "train_seconds": 0.0, "train_tokens": 0, "stopped_early": False, "done": False}
    if resumed is not None:
        set_peft_model_state_dict(accelerator.unwrap_model(model), resumed["lora"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        loop.update(resumed["loop"])
        best_state = resumed["best_state"]
        epochs = [EpochLog(**e) for e in loop["epochs"]]
        initial = epochs[0].val_loss
        if accelerator.is_main_process and config.progress:
            tqdm.write(f"[{config.stage}] resuming from {ckpt_path} at epoch {loop['epoch']}, batch {loop['batches_done']}")
    else:
        initial = val_loss()
        epochs = [EpochLog(epoch=0, train_loss=None, val_loss=initial)]
        loop["best_loss"] = initial
        best_state = lora_state()
    last_checkpoint, steps_since = time.monotonic(), 0

    def checkpoint() -> None:
        """Save where the loop stands, with the RNG state the next batch starts from (the main process writes)."""
        nonlocal last_checkpoint, steps_since
        if accelerator.is_main_process:
            loop["epochs"] = [asdict(e) for e in epochs]
            save_checkpoint(ckpt_path, {"run_key": key, "lora": lora_state(), "optimizer": optimizer.state_dict(),
                                        "scheduler": scheduler.state_dict(), "rng": rng_state(),
                                        "loop": dict(loop), "best_state": best_state})
        last_checkpoint, steps_since = time.monotonic(), 0

    def checkpoint_due() -> bool:
        minutes = config.checkpoint_every_minutes
        return bool((config.checkpoint_every_steps and steps_since >= config.checkpoint_every_steps)
                    or (minutes and time.monotonic() - last_checkpoint >= 60.0 * minutes))

    replay_train = replay("train")
    model.train()
    while not loop["done"] and loop["epoch"] <= config.max_epochs:
        epoch = loop["epoch"]
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        skip = loop["batches_done"]
        if resumed is not None and skip == 0:  # an epoch-end checkpoint: the RNG as the next epoch found it
            set_rng_state(resumed["rng"])
            resumed = None
        loss_sum = torch.tensor(loop["loss_sum"], dtype=torch.float64, device=accelerator.device)
        t0 = time.perf_counter() - loop["epoch_seconds"]
        bar = tqdm(
            total=len(train_loader), initial=skip, unit="batch",
            desc=f"{config.stage} epoch {epoch}/{config.max_epochs}",
            disable=not (config.progress and accelerator.is_local_main_process),
            leave=False,
        )
        for index, batch in enumerate(train_loader):
            if index < skip:  # batches trained before the checkpoint: same order, so skip them
                continue
            if index == skip and resumed is not None:  # the RNG exactly as it was after the checkpoint's last batch
                set_rng_state(resumed["rng"])
                resumed = None
            with accelerator.accumulate(model):
                with autocast(), replay_train(batch):
                    if aux_loss is not None:
                        out = model(**batch, **aux_loss.forward_kwargs)
                        extra = aux_loss(out, batch)
                        loop["aux_sum"] += float(extra.detach())
                        loop["aux_batches"] += 1
                        lm_loss = out.loss
                        loss = lm_loss + aux_loss.weight * extra
                    else:
                        lm_loss, _ = causal_lm_loss(model, batch, target_only)
                        loss = lm_loss
                accelerator.backward(loss)
                if config.max_grad_norm and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            n_target = int((batch["labels"][:, 1:] != -100).sum())
            loss_sum[0] += float(lm_loss.detach()) * n_target
            loss_sum[1] += n_target
            loop["epoch_tokens"] += int(batch["attention_mask"].sum())
            loop["batches_done"] = index + 1
            elapsed = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{float(lm_loss.detach()):.3f}", tok_s=f"{loop['epoch_tokens'] / max(elapsed, 1e-9):.0f}")
            if accelerator.sync_gradients:
                steps_since += 1
                if index + 1 < len(train_loader) and checkpoint_due():
                    loop["loss_sum"], loop["epoch_seconds"] = loss_sum.tolist(), elapsed
                    checkpoint()
        bar.close()
        ep_seconds = time.perf_counter() - t0
        loss_sum = accelerator.reduce(loss_sum, reduction="sum")
        ep_tokens = int(accelerator.reduce(torch.tensor(loop["epoch_tokens"], device=accelerator.device), reduction="sum"))
        loop["train_seconds"] += ep_seconds
        loop["train_tokens"] += ep_tokens
        vl = val_loss()
        epochs.append(EpochLog(epoch, float(loss_sum[0] / max(loss_sum[1], 1)), vl, round(ep_seconds, 3), ep_tokens))
        if loop["aux_batches"]:
            epochs[-1].aux_loss = round(loop["aux_sum"] / loop["aux_batches"], 4)
        if accelerator.is_main_process and config.progress:
            tqdm.write(f"[{config.stage}] epoch {epoch}: train {epochs[-1].train_loss:.4f}" + (f"  val {vl:.4f}" if vl is not None else "")
                       + f"  {ep_tokens / max(ep_seconds, 1e-9):.0f} tokens/s")
        best_loss = loop["best_loss"]
        improved = vl is None or best_loss is None or vl < best_loss - config.min_delta
        if improved:
            loop["best_loss"], loop["best_epoch"], loop["bad_epochs"] = vl, epoch, 0
            best_state = lora_state()
        else:
            loop["bad_epochs"] += 1
            if loop["bad_epochs"] > config.patience:
                loop["stopped_early"], loop["done"] = True, True
        loop.update(epoch=epoch + 1, batches_done=0, epoch_seconds=0.0, epoch_tokens=0, loss_sum=[0.0, 0.0], aux_sum=0.0,
                    aux_batches=0)
        if not loop["done"] and loop["epoch"] <= config.max_epochs and checkpoint_due():
            checkpoint()
    best_loss, best_epoch, stopped_early = loop["best_loss"], loop["best_epoch"], loop["stopped_early"]
    train_seconds, train_tokens = loop["train_seconds"], loop["train_tokens"]

    if attention is not None:
        attention.remove()
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None:
        set_peft_model_state_dict(unwrapped, best_state)
    tokens_per_s = train_tokens / train_seconds if train_seconds > 0 else 0.0
    target_lengths = [sum(1 for x in row[1] if x != -100) for row in train_rows]
    card = {
        "format": 1,
        "stage": config.stage,
        "created_by": f"memlora {memlora.__version__}",
        "base_model": {
            "dir": str(base_dir.resolve()),
            "model_type": getattr(model_config, "model_type", None),
            "context_length": max_length,
        },
        "tokenizer_sha256": tok_sha,
        "data": {
            "train_sha256": examples_hash(train_examples),
            "val_sha256": examples_hash(val_examples),
            "n_train": len(train_rows),
            "n_val": len(val_rows),
            "dropped_too_long": {"train": dropped_train, "val": dropped_val},
            "sources": _count_sources(train_examples),
            "train_tokens_per_epoch": sum(len(row[0]) for row in train_rows),
            "max_target_tokens": max(target_lengths),
        },
        "hyperparameters": {**_jsonable(asdict(config)), "target_modules": target_modules, "target_lead_space": lead_space,
                            **_jsonable(aux_loss.hyperparameters() if aux_loss is not None else {})},
        "precision": "bf16" if precision == "bf16" else "fp32",
        "target_only_head": target_only,
        "fast_dropout": fast_dropout,
        "attention": attention.summary() if attention is not None else None,
        "frozen_linears_bf16": bf16_linears,
        "lora_layers": layers if layers is not None else "all",
        "frozen_layer_cache": ({"layers": list(range(frozen.first)), "megabytes": round(frozen.nbytes / 1e6, 1),
                                "seconds": round(frozen.fill_seconds, 3)}
                               if frozen is not None else None),
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "epochs": [asdict(e) for e in epochs],
        "initial_val_loss": initial,
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "stopped_early": stopped_early,
        "resumed_from": resumed_from,
        "train_seconds": round(train_seconds, 3),
        "tokens_per_s": round(tokens_per_s, 2),
        "suggested_max_new_tokens": suggested_max_new_tokens(target_lengths),
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    if accelerator.is_main_process:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped.save_pretrained(str(tmp))
        write_json_atomic(tmp / CARD_FILE, card)
        if config.plot and has_module("matplotlib"):  # the loss curve needs the eval extra; the expert does not
            _plot(epochs, tmp / "loss_curve.png", f"{config.stage} expert (best epoch {best_epoch})")
        _replace_dir(tmp, out_dir)
    accelerator.wait_for_everyone()
    return TrainResult(
        out_dir=out_dir,
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        initial_val_loss=initial,
        epochs=epochs,
        tokens_per_s=tokens_per_s,
        stopped_early=stopped_early,
        card=card,
    )


_NOT_IN_RUN_KEY = ("progress", "plot", "threads", "checkpoint_every_minutes", "checkpoint_every_steps", "resume",
                   "cache_frozen_layers", "frozen_cache_max_gb")
"""TrainConfig fields that do not change what a run computes: a rerun that changes only these resumes."""


def _count_sources(examples: Sequence[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ex in examples:
        src = str(ex.get("source", "unknown"))
        counts[src] = counts.get(src, 0) + 1
    return counts


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
