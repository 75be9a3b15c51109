"""A tiny base model pretrained FROM SCRATCH on the synthetic world's raw conversation text (language modelling only).

No pretrained weights can be downloaded here, so the demo's default "small language model" is grown locally: the
world's training conversations (never the val/test ones), rendered as chat turns, are the whole pretraining corpus;
no prompt, fact or answer of any memory operation is in it. Prompted with the memory operations, this base fails them
(the paper's "SLM without experts"); the experts (``world_experts.py``) are what makes it work.

    pretrain_world_model("models/tiny-world", seed=0)    # a dir built by memlora.models.build_model, rewritten in place
    memlora make-model --size tiny-world --pretrain world

The tokenizer is retrained (``memlora.models.build_tokenizer``, same recipe) on the world text plus the project's
tokenizer corpus, so world words are single tokens and sequences stay short; the model is re-initialised at the same
shape with that vocabulary and trained with AdamW. Deterministic for a given seed and thread count; files are replaced
atomically.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memlora.errors import MemloraError
from memlora.models import (
    CORPUS_NAME,
    IM_END,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    build_tokenizer,
    make_config,
)
from memlora.paths import data_file
from memlora.runtime import prompts
from memlora.world.generator import WorldConfig, WorldConversation, generate_world

PRETRAIN_RECIPE_VERSION = 1


@dataclass
class PretrainConfig:
    """How the world base model is pretrained. The defaults are the ``plain`` preset's base (``memlora make-model --size
    tiny-world --pretrain world``); ``copy_pretrain_config()`` is the demo's default ``copy`` preset's base
    (``--pretrain world-copy``)."""

    world: WorldConfig | None = None
    """The world whose training conversations are the corpus (None: ``WorldConfig()``, the default world)."""
    vocab_size: int = 2048
    """Vocabulary of the retrained byte-level BPE tokenizer."""
    steps: int = 300
    """Optimiser steps."""
    batch_size: int = 8
    """Sequences per step."""
    seq_len: int = 256
    """Tokens per sequence (the corpus is one token stream cut into windows)."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup_steps: int = 20
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    lr_schedule: str = "cosine"
    """"cosine" (decay to 10% after warm-up) or "constant" (after warm-up)."""
    rope_theta: float | None = None
    """RoPE base frequency (None: the size's own, 1e6 for the Qwen2.5 shapes)."""
    freeze_embeddings: bool = False
    """Keep the tied token embeddings at a random init N(0, 1/hidden) instead of training them: LM pretraining pulls
    interchangeable values (cities, names) onto one direction, which is what makes copying WHICH value hard."""
    copy_head_alpha: float = 0.0
    """Wire a copy head into the last layer before pretraining and keep it fixed (query head 0 / KV head 0: V = a
    random orthonormal projection R, O = alpha R^T, so the head writes the attended token's embedding back); 0 = none."""
    prev_token_alpha: float = 0.0
    """Wire a previous-token head into the first layer before pretraining and keep it fixed (query head 0 / KV head 0:
    constant query and key biases phased for RoPE so that every position attends to the one before it, V = a random
    orthonormal projection, O = alpha times another, outside what the copy head reads): each position then carries the
    token before it, which a copy head needs to continue a copied run (the month after a copied day), an induction
    step; 0 = none. No preset uses it."""
    threads: int | None = 2
    """torch CPU threads (None: torch's default)."""
    progress: bool = True
    """Show a progress bar."""


def _chat_render(tokenizer, conv: WorldConversation) -> str:
    """One conversation as chat text: each session a chat of ``Speaker: text`` turns with alternating roles."""
    parts = []
    for session in conv.sessions:
        messages = [{"role": "system", "content": f"Session {session.index}, {session.date_time}"}]
        for i, turn in enumerate(session.turns):
            messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"{turn.speaker}: {turn.text}"})
        parts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))
    return "".join(parts)


def _tokenizer_corpus(conversations: list[WorldConversation]) -> str:
    """World text (paragraph per session) + the project's tokenizer corpus (prompts, JSON, dates) for the BPE trainer."""

    paragraphs = []
    for conv in conversations:
        for session in conv.sessions:
            paragraphs.append("\n".join(f"{t.speaker}: {t.text}" for t in session.turns))
    fixed = [prompts.MEMLORA_EXTRACTION_PROMPT, prompts.MEMLORA_UPDATE_PROMPT, prompts.MEMLORA_GENERATION_PROMPT]
    return "\n\n".join(paragraphs + fixed + [data_file(CORPUS_NAME).read_text(encoding="utf-8")])


def init_unseen_embeddings(model, stream_ids, seed: int = 0) -> int:
    """Give every token that never occurred in the pretraining stream an embedding drawn from the seen tokens' mean and
    covariance (Hewitt, 2021: initialising new word embeddings). Left at its random init, such a token's (tied) output
    embedding is far smaller than the trained ones, so no fine-tuning of attention/MLP weights (LoRA) could ever make the
    model emit it -- and the memory operations' JSON (``{"facts": ...}``) consists largely of such tokens. Returns how many
    rows were re-initialised."""
    import torch

    emb = model.get_input_embeddings().weight
    counts = torch.bincount(torch.tensor(stream_ids, dtype=torch.long), minlength=emb.shape[0])[: emb.shape[0]]
    seen = counts > 0
    unseen = (~seen).nonzero().flatten()
    if len(unseen) == 0 or int(seen.sum()) < 2:
        return 0
    with torch.no_grad():
        seen_rows = emb[seen]
        mean = seen_rows.mean(0)
        centered = seen_rows - mean
        z = torch.randn(len(unseen), centered.shape[0], generator=torch.Generator().manual_seed(seed))
        noise = z @ centered / math.sqrt(centered.shape[0] - 1)  # covariance = the seen rows' covariance
        emb[unseen] = mean + noise
    return len(unseen)


def _read_build_info(model_dir: Path) -> dict:
    info_path = model_dir / "memlora_model.json"
    if not info_path.is_file():
        raise MemloraError(
            f"{model_dir} was not built by memlora.models (no memlora_model.json): world pretraining starts from "
            "`memlora make-model --size tiny-world` output"
        )
    return json.loads(info_path.read_text())


REWRITTEN_FILES = ("tokenizer.json", "tokenizer_config.json", "model.safetensors", "chat_template.jinja", "special_tokens_map.json")


def replace_files(src: Path, dst: Path, drop: tuple[str, ...] = REWRITTEN_FILES) -> None:
    """Move every file of ``src`` into ``dst`` (os.replace, atomic per file) and delete the files named in ``drop`` that
    ``src`` does not have (left over from the model ``dst`` held before)."""
    keep = {p.name for p in src.iterdir()}
    for p in src.iterdir():
        os.replace(p, dst / p.name)
    for name in drop:
        if name not in keep and (dst / name).is_file():
            (dst / name).unlink()


class PinnedCircuit:
    """Weight slices wired by hand and kept fixed during pretraining: ``_pinned`` holds (parameter, index, value)."""

    _pinned: list

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for param, index, value in self._pinned:
                param[index] = value


class CopyHead(PinnedCircuit):
    """The fixed copy circuit of ``PretrainConfig.copy_head_alpha``: wired into ``model``'s last layer at construction,
    re-imposed by ``restore()`` after every optimiser step (AdamW would otherwise train it away)."""

    def __init__(self, model, alpha: float, seed: int = 1):
        import torch

        attention = model.model.layers[-1].self_attn
        head_dim = attention.head_dim
        hidden = attention.o_proj.weight.shape[0]
        generator = torch.Generator().manual_seed(seed)
        rows = torch.linalg.qr(torch.randn(hidden, head_dim, generator=generator))[0].T  # head_dim x hidden, orthonormal
        self.rows = rows
        self._pinned = [(attention.v_proj.weight, (slice(0, head_dim),), rows),
                        (attention.o_proj.weight, (slice(None), slice(0, head_dim)), alpha * rows.T)]
        if attention.v_proj.bias is not None:
            self._pinned.append((attention.v_proj.bias, (slice(0, head_dim),), torch.zeros(head_dim)))
        self.restore()


class PrevTokenHead(PinnedCircuit):
    """The fixed previous-token circuit of ``PretrainConfig.prev_token_alpha``, wired into ``model``'s first layer.

    RoPE rotates frequency pair f of a query at position i by i*theta_f, so a constant query (a_f, 0) and a constant key
    a_f (cos theta_f, sin theta_f) score sum_f a_f^2 cos(theta_f (d - 1)) / sqrt(head_dim) at distance d = i - j: every
    pair peaks at d = 1. The weights a_f^2 are ``PREV_TOKEN_WEIGHTS`` (a linear programme over the RoPE frequencies
    that maximises the margin of d = 1 over every other distance up to 1,200 tokens), scaled to ``margin`` nats. Query
    heads that share KV head 0 (head 1 in ``tiny-world``) get its constant keys too and stay trainable: learned
    positional heads. ``avoid`` (the copy head's V rows): O writes outside the subspace they read.
    """

    def __init__(self, model, alpha: float, seed: int = 2, margin: float = 12.0, avoid=None):
        import torch

        attention = model.model.layers[0].self_attn
        head_dim = attention.head_dim
        hidden = attention.o_proj.weight.shape[0]
        if attention.q_proj.bias is None or attention.k_proj.bias is None:
            raise MemloraError("the previous-token head needs query/key biases (Qwen2 has them)")
        half = head_dim // 2
        inv_freq = model.model.rotary_emb.inv_freq.detach().to(torch.float64)  # the model's own RoPE frequencies
        weights = torch.zeros(half, dtype=torch.float64)
        n = min(half, len(PREV_TOKEN_WEIGHTS))
        weights[:n] = torch.tensor(PREV_TOKEN_WEIGHTS[:n], dtype=torch.float64)
        distance = torch.arange(1201, dtype=torch.float64)
        score = (weights * torch.cos(torch.outer(distance - 1, inv_freq))).sum(1)  # per unit scale, before 1/sqrt(head_dim)
        unit_margin = float(score[1] - torch.cat([score[:1], score[2:]]).max())
        if unit_margin < 0.05:
            raise MemloraError(f"the model's RoPE frequencies (head_dim {head_dim}) turn too slowly: the previous-token head "
                               "cannot single out d = 1")
        scale = math.sqrt(margin * math.sqrt(head_dim) / unit_margin)  # a_f = scale * sqrt(w_f)
        a = scale * weights.sqrt()
        query = torch.cat([a, torch.zeros(half, dtype=torch.float64)]).float()
        key = torch.cat([a * inv_freq.cos(), a * inv_freq.sin()]).float()
        generator = torch.Generator().manual_seed(seed)
        rows = torch.linalg.qr(torch.randn(hidden, head_dim, generator=generator))[0].T  # head_dim x hidden, orthonormal
        draw = torch.randn(hidden, head_dim, generator=generator)
        if avoid is not None:  # write outside the subspace the copy head reads, or it would copy the previous token too
            draw = draw - avoid.T @ (avoid @ draw)
        out = torch.linalg.qr(draw)[0]  # hidden x head_dim, orthonormal
        heads = slice(0, head_dim)
        self._pinned = [(attention.q_proj.weight, (heads,), torch.zeros(head_dim, hidden)), (attention.q_proj.bias, (heads,), query),
                        (attention.k_proj.weight, (heads,), torch.zeros(head_dim, hidden)), (attention.k_proj.bias, (heads,), key),
                        (attention.v_proj.weight, (heads,), rows), (attention.o_proj.weight, (slice(None), heads), alpha * out)]
        if attention.v_proj.bias is not None:
            self._pinned.append((attention.v_proj.bias, (heads,), torch.zeros(head_dim)))
        self.restore()


# Frequency weights of the previous-token head: the linear programme "maximise min over d != 1 (0 <= d <= 1,200) of
# sum_f w_f (1 - cos(theta_f (d - 1))), sum w = 1" solved with scipy for head_dim 32 and RoPE theta 1e4 (margin 0.273).
# PrevTokenHead measures the margin for the model's own RoPE frequencies and scales to its target in nats.
PREV_TOKEN_WEIGHTS = (0.56, 0.084, 0.04, 0.032, 0.068, 0.036, 0.042, 0.045, 0.027, 0.024, 0.042)


def copy_pretrain_config(world: WorldConfig | None = None) -> PretrainConfig:
    """The ``copy`` recipe: the default recipe plus a fixed copy head, frozen random embeddings, RoPE theta 1e4 and a
    constant learning rate (README, world section: what each buys)."""
    return PretrainConfig(world=world, lr_schedule="constant", rope_theta=1e4, freeze_embeddings=True, copy_head_alpha=1.0)


def pretrain_world_model_copy(model_dir: str | os.PathLike, seed: int = 0) -> Path:
    """``pretrain_world_model`` with ``copy_pretrain_config()`` (``memlora make-model --pretrain world-copy``)."""
    return pretrain_world_model(model_dir, seed=seed, config=copy_pretrain_config())


def causal_lm_step(model, optimizer, batch, lr: float) -> float:
    """One optimiser step of causal language modelling on ``batch`` (token ids, labels = inputs) at learning rate ``lr``,
    gradients clipped to norm 1; returns the loss. Shared by the world pretraining and the VLM's continued pretraining."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def pretrain_world_model(model_dir: str | os.PathLike, seed: int = 0, config: PretrainConfig | None = None) -> Path:
    """Pretrain the model in ``model_dir`` (built by ``memlora.models.build_model``) from scratch on the world's text.

    Rewrites the tokenizer, weights and ``memlora_model.json`` in place (each file atomically); returns ``model_dir``.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, GenerationConfig


    config = config or PretrainConfig()
    if config.lr_schedule not in ("cosine", "constant"):
        raise MemloraError(f"PretrainConfig.lr_schedule must be cosine or constant, got {config.lr_schedule!r}")
    model_dir = Path(model_dir)
    info = _read_build_info(model_dir)
    arch, size = info.get("arch"), info.get("size")
    world_config = config.world or WorldConfig()
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(int(config.threads))

    world = generate_world(world_config)
    train = world.split("train")
    with tempfile.TemporaryDirectory(prefix="memlora-world-", dir=model_dir.parent) as tmp_root:
        tmp = Path(tmp_root)
        corpus = tmp / "corpus.txt"
        corpus.write_text(_tokenizer_corpus(train), encoding="utf-8")
        out = tmp / "out"
        tokenizer = build_tokenizer(out, corpus=corpus, vocab_size=config.vocab_size)
        special_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        model_config = make_config(arch, size, vocab_size=len(tokenizer), special_ids=special_ids)
        if config.rope_theta:
            model_config.rope_parameters = {**(getattr(model_config, "rope_parameters", None) or {}), "rope_type": "default",
                                            "rope_theta": float(config.rope_theta)}

        stream: list[int] = []
        for conv in train:
            stream.extend(tokenizer(_chat_render(tokenizer, conv), add_special_tokens=False)["input_ids"])
        n_windows = len(stream) // config.seq_len
        if n_windows < 1:
            raise MemloraError("the world is too small to pretrain on: raise n_conversations")
        data = torch.tensor(stream[: n_windows * config.seq_len], dtype=torch.long).view(n_windows, config.seq_len)

        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
        model.train()
        embeddings = model.get_input_embeddings().weight
        if config.freeze_embeddings:
            with torch.no_grad():
                embeddings.normal_(0.0, 1.0 / math.sqrt(embeddings.shape[1]))
            embeddings.requires_grad_(False)
        copy_head = CopyHead(model, config.copy_head_alpha) if config.copy_head_alpha else None
        prev_head = PrevTokenHead(model, config.prev_token_alpha, avoid=copy_head.rows if copy_head else None) \
            if config.prev_token_alpha else None
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and p.requires_grad]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
        )

        def lr_at(step: int) -> float:
            if step < config.warmup_steps:
                return config.lr * (step + 1) / config.warmup_steps
            if config.lr_schedule == "constant":
                return config.lr
            progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
            return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

        order = torch.randperm(n_windows, generator=gen)
        cursor, losses = 0, []
        bar = tqdm(range(config.steps), desc="pretraining the world base", disable=not config.progress, leave=False)
        for step in bar:
            if cursor + config.batch_size > n_windows:
                order, cursor = torch.randperm(n_windows, generator=gen), 0
            batch = data[order[cursor : cursor + config.batch_size]]
            cursor += config.batch_size
            losses.append(causal_lm_step(model, optimizer, batch, lr_at(step)))
            for head in (copy_head, prev_head):
                if head is not None:
                    head.restore()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")

        # frozen random embeddings are all alike already; trained ones leave unseen tokens at a far smaller init
        reinitialised = 0 if config.freeze_embeddings else init_unseen_embeddings(model, stream, seed=seed)
        embeddings.requires_grad_(True)
        model.eval()
        model.generation_config = GenerationConfig(
            bos_token_id=special_ids[PAD_TOKEN], pad_token_id=special_ids[PAD_TOKEN],
            eos_token_id=[special_ids[IM_END], special_ids[PAD_TOKEN]], do_sample=False,
        )
        model.save_pretrained(out, safe_serialization=True)
        info.update(
            random_weights=False,
            parameters=sum(p.numel() for p in model.parameters()),
            pretraining={
                "kind": "world",
                "recipe_version": PRETRAIN_RECIPE_VERSION,
                "world": asdict(world_config),
                "corpus": "the world's train-split conversations as chat turns (no task data)",
                "corpus_tokens": len(stream),
                "config": {k: v for k, v in asdict(config).items() if k not in ("world", "progress")},
                "first_loss": round(losses[0], 4),
                "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
                "unseen_tokens_reinitialised": reinitialised,
                "seconds": round(time.perf_counter() - started, 1),
            },
        )
        (out / "memlora_model.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        replace_files(out, model_dir)
    return model_dir
