"""World-pretrained synthetic models: ``memlora make-model --pretrain world|world-copy`` (``memlora.models`` builds the
random model; this pretrains it on the synthetic memory world, and a VLM gets a world-pretrained language model grafted
in by ``memlora.world.vlm_pretrain``)."""

from __future__ import annotations

import json
from pathlib import Path

from memlora.errors import MemloraError
from memlora.models import VLM_ARCHS, ensure_model
from memlora.world import pretrain as world_pretrain
from memlora.world import vlm_pretrain

PRETRAIN_KINDS = ("world", "world-copy")
"""world: the synthetic memory world's text (the ``plain`` preset's recipe); world-copy: the same text with a fixed copy
head and frozen random embeddings (the demo's default ``copy`` preset's recipe; text models only)."""


def pretrainer(kind: str):
    """The function that pretrains a built text model in place for ``kind``; a clear ``MemloraError`` for an unknown kind."""
    if kind not in PRETRAIN_KINDS:
        raise MemloraError(f"unknown pretraining {kind!r}: choose one of {', '.join(PRETRAIN_KINDS)}")
    return world_pretrain.pretrain_world_model_copy if kind == "world-copy" else world_pretrain.pretrain_world_model


def pretrain_tag(kind: str, arch: str) -> str:
    """The cache tag of ``kind`` on ``arch`` (``memlora.models.model_cache_key``): the kind and its recipe version, and
    for a VLM the graft's recipe version too."""
    pretrainer(kind)
    tag = f"{kind}{world_pretrain.PRETRAIN_RECIPE_VERSION}"
    return tag + (f"-graft{vlm_pretrain.GRAFT_RECIPE_VERSION}" if arch in VLM_ARCHS else "")


def pretrain_model(kind: str, model_dir, seed: int = 0) -> Path:
    """Pretrain a freshly built model in place (``world``: on the synthetic memory world, by ``memlora.world.pretrain``;
    for a VLM, a world-pretrained Qwen2 of its text shape is grafted in as its language model)."""
    run = pretrainer(kind)
    info = Path(model_dir) / "memlora_model.json"
    if info.is_file() and json.loads(info.read_text()).get("arch") in VLM_ARCHS:
        if kind != "world":
            raise MemloraError(f"--pretrain {kind} is for text models; a VLM takes --pretrain world (its grafted language model)")
        vlm_pretrain.pretrain_vlm_world(Path(model_dir), seed=seed)
        return Path(model_dir)
    run(Path(model_dir), seed=seed)
    return Path(model_dir)


def ensure_pretrained_model(arch: str, size: str, seed: int = 0, dtype: str = "float32", kind: str = "world") -> Path:
    """The cached model of ``arch``/``size`` pretrained by ``kind`` (built on first use)."""
    return ensure_model(arch, size, seed, dtype, pretrain_tag(kind, arch), lambda out: pretrain_model(kind, out, seed=seed))
