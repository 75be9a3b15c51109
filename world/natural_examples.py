"""Training examples from the natural conversations (``memlora.world.natural``), in the format ``memlora-train train``
reads (``DATA/<split>/<stage>.jsonl``, ``memlora.corpus.dataset``) and ``memlora.world.examples`` writes for the world.

Each message pair of Mem0's protocol (``ingestion_batches``) gives an extraction example (the pair -> the store owner's
gold facts) and, when it has facts, an update example (the owner's memories before the pair + the facts -> the gold
operations); each question gives a generation example (the asker's final memories with their timestamps -> the gold
answer). Prompts are the loop's (``memlora.runtime.prompts``); the memories an update or generation example shows are
chosen and ordered as ``memory_order`` says (``memlora.world.examples.MEMORY_ORDERS``, ranked by the loop's embedder
through the world's ``RetrievalOrder``). ``export_natural_jsonl`` writes train/val (optionally mixed with the world's
examples) and the kept-aside demo conversation as the test split, so training never sees it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from memlora import LOOP_STAGES
from memlora.corpus.dataset import stage_path, write_json_atomic, write_jsonl_atomic
from memlora.errors import DataError
from memlora.runtime import prompts
from memlora.world.examples import (
    RetrievalOrder,
    check_memory_order,
    extraction_example,
    loop_retrieved,
    retrieval_ordered,
    update_example,
    world_examples,
)
from memlora.world.generator import MEM0_OP_KEYS, MemoryOp, UpdateCase, WorldConfig, check_op_key_order, generate_world
from memlora.world.natural import NaturalConversation, gold_steps, load_natural, to_locomo_sample

SOURCE = "natural"
DISTRACTOR_SOURCE = "natural-distractors"
"""``source`` of the update examples with distractor memories (``distractor_update_examples``)."""
SPLIT_FILES = {"train": "train", "val": "val", "test": "demo"}
"""Training split -> the natural file written there (the kept-aside demo conversation is the test split)."""
DEFAULT_MEMORY_ORDER = "loop"
"""The loop's own choice and order of memories (``MEMORY_ORDERS``)."""
DISTRACTORS_PER_STEP = (2, 6)
"""How many distractor memories a distractor copy of an update example adds to the owner's store (inclusive range)."""


class _Shuffled:
    """A ``RetrievalOrder`` stand-in for ``memory_order="shuffled"``: every memory, in a seeded random order."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def union_rank(self, queries, texts, top, rest=True) -> list[int]:
        order = list(range(len(texts)))
        self.rng.shuffle(order)
        return order


def gold_case(before: dict[str, str], facts: list[str], ops: list[dict]) -> UpdateCase:
    """The pair's gold update over the owner's whole memory, shown in insertion order as "0".."n-1" (stable ids
    renumbered; ADD ids follow the shown ones)."""
    position = {mid: str(i) for i, mid in enumerate(before)}
    old = [{"id": position[mid], "text": text} for mid, text in before.items()]
    case_ops, next_add = [], len(old)
    for op in ops:
        if op["event"] == "ADD":
            case_ops.append(MemoryOp("ADD", str(next_add), op["text"]))
            next_add += 1
        else:
            case_ops.append(MemoryOp(op["event"], position[op["id"]], op["text"], op.get("old_memory")))
    return UpdateCase(old_memories=old, facts=list(facts), ops=case_ops)


def extraction_examples(conv: NaturalConversation, prompt_set: str = "memlora") -> list[dict]:
    """One example per ingestion step: the message pair as the owner's store sees it -> the owner's gold facts."""
    return [extraction_example(conv.sample_id, batch.user_id, batch.session, batch.messages, facts, prompt_set, SOURCE)
            for batch, facts, _, _ in gold_steps(conv)]


def update_examples(conv: NaturalConversation, op_key_order: Sequence[str] = MEM0_OP_KEYS, prompt_set: str = "memlora",
                    memory_order: str = DEFAULT_MEMORY_ORDER, ranker: RetrievalOrder | None = None,
                    distractors: Sequence[str] = (), seed: str = "") -> list[dict]:
    """One example per ingestion step with facts: the owner's memories (chosen and ordered by ``memory_order``, ids
    "0".."n-1") + the facts -> the gold operations, each op's keys in ``op_key_order``.

    With ``distractors`` (memory texts of other conversations; ``memory_order="loop"`` only), each step's store also
    holds ``DISTRACTORS_PER_STEP`` of them (seeded by ``seed``), as a user with a longer history would: the loop then
    shows the expert unrelated memories beside the related ones, and the gold operations stay the same."""
    op_key_order = check_op_key_order(op_key_order)
    if distractors and memory_order != "loop":
        raise DataError(f"distractor memories need memory_order='loop', got {memory_order!r}")
    ranker = check_memory_order(memory_order, ranker) or _Shuffled(random.Random(f"{conv.sample_id}:update"))
    steps = [step for step in gold_steps(conv) if step[1]]
    if isinstance(ranker, RetrievalOrder):
        ranker.embed([t for _, facts, ops, before in steps for t in (*facts, *before.values())] + list(distractors))
    rng = random.Random(f"{conv.sample_id}:update-distractors:{seed}")
    distractors = list(dict.fromkeys(distractors))
    out = []
    for batch, facts, ops, before in steps:
        case = gold_case(before, facts, ops)
        memory = list(before.values())
        if distractors:
            taken = set(memory) | set(facts)
            pool = [t for t in distractors if t not in taken]
            memory += rng.sample(pool, min(rng.randint(*DISTRACTORS_PER_STEP), len(pool)))
        if memory_order == "loop":
            case = loop_retrieved(case, memory, ranker)
        else:
            case = retrieval_ordered(case, ranker)
        example = update_example(conv.sample_id, batch.user_id, batch.session, batch.messages, case, op_key_order,
                                 prompt_set, DISTRACTOR_SOURCE if distractors else SOURCE)
        if distractors:
            example["id"] += f":distractors:{seed}"
            example["meta"]["distractors"] = len(memory) - len(before)
        out.append(example)
    return out


def distractor_update_examples(conversations: list[NaturalConversation], copies: int, op_key_order: Sequence[str] = MEM0_OP_KEYS,
                               prompt_set: str = "memlora", ranker: RetrievalOrder | None = None) -> list[dict]:
    """``copies`` more update examples per step with facts, each with distractor memories in the owner's store
    (``update_examples``' ``distractors``): the gold facts of the other conversations. The natural conversations are
    short, so their update examples rarely show more than two memories; the loop shows up to ``top_s`` per fact once
    a user has a history, and an expert that never saw that answers with the first memory shown instead of adding the
    new fact."""
    if copies < 0:
        raise DataError(f"the number of distractor copies must be >= 0, got {copies}")
    ranker = check_memory_order("loop", ranker)
    facts_of = {conv.sample_id: [f for _, facts, _, _ in gold_steps(conv) for f in facts] for conv in conversations}
    out = []
    for copy in range(copies):
        for conv in conversations:
            pool = [f for sample_id, facts in facts_of.items() if sample_id != conv.sample_id for f in facts]
            out += update_examples(conv, op_key_order, prompt_set, "loop", ranker, distractors=pool, seed=str(copy))
    return out


def generation_examples(conv: NaturalConversation, prompt_set: str = "memlora", memory_order: str = DEFAULT_MEMORY_ORDER,
                        ranker: RetrievalOrder | None = None) -> list[dict]:
    """One example per question: the asker's final memories with their timestamps (ordered by ``memory_order``;
    "loop" keeps ``answer_k`` of them, as ``Memory.answer`` does) -> the gold answer."""
    from memlora.runtime.memory import MemoryConfig  # FAISS, torch or the engines: off the import path until used

    ranker = check_memory_order(memory_order, ranker)
    rng = random.Random(f"{conv.sample_id}:generation")
    if ranker is not None:
        ranker.embed([m.text for ms in conv.memories.values() for m in ms] + [q.question for q in conv.qa])
    out = []
    for k, qa in enumerate(conv.qa):
        memories = [(m.timestamp, m.text) for m in conv.memories[qa.speaker]]
        rng.shuffle(memories)  # always drawn, so that every order sees the same examples
        if ranker is not None:
            memories = [memories[i] for i in ranker.rank(qa.question, [text for _, text in memories])]
        if memory_order == "loop":
            memories = memories[:MemoryConfig.answer_k]
        out.append({
            "id": f"{conv.sample_id}:q{k}:generation",
            "stage": "generation",
            "messages": prompts.generation_messages(qa.question, memories, prompt_set),
            "target": qa.answer,
            "source": SOURCE,
            "meta": {"conversation": conv.sample_id, "speaker": qa.speaker, "category": qa.category, "evidence": qa.evidence},
        })
    return out


def natural_examples(conversations: list[NaturalConversation], stage: str, op_key_order: Sequence[str] = MEM0_OP_KEYS,
                     prompt_set: str = "memlora", memory_order: str = DEFAULT_MEMORY_ORDER,
                     ranker: RetrievalOrder | None = None) -> list[dict]:
    """Every example of ``stage`` for the given conversations, in conversation order."""
    if stage not in LOOP_STAGES:
        raise DataError(f"the natural conversations have no {stage!r} examples; stages: {', '.join(LOOP_STAGES)}")
    prompts.get_prompt_set(prompt_set)  # an unknown set fails before any example is built
    ranker = check_memory_order(memory_order, ranker)
    out = []
    for conv in conversations:
        if stage == "extraction":
            out += extraction_examples(conv, prompt_set)
        elif stage == "update":
            out += update_examples(conv, op_key_order, prompt_set, memory_order, ranker)
        else:
            out += generation_examples(conv, prompt_set, memory_order, ranker)
    return out


def mix(natural: list[dict], world: list[dict], world_ratio: float, seed: str) -> list[dict]:
    """``natural`` plus ``round(world_ratio * len(natural))`` of ``world`` (a seeded sample; all of it when that asks
    for more), shuffled together with ``seed``."""
    if world_ratio < 0:
        raise DataError(f"the world mix ratio must be >= 0, got {world_ratio}")
    rng = random.Random(seed)
    n = min(len(world), round(world_ratio * len(natural)))
    rows = natural + rng.sample(world, n)
    if n:
        rng.shuffle(rows)
    return rows


def describe_counts(stages: dict[str, dict[str, int]]) -> str:
    """One split's ``export_natural_jsonl`` counts as text: "extraction 518 natural + 518 world, update ..."."""
    return ", ".join(f"{stage} {c['natural']} natural + {c['world']} world"
                     + (f" + {c['distractor copies']} with distractors" if c["distractor copies"] else "")
                     for stage, c in stages.items())


def export_natural_jsonl(data_dir: str | Path, world_ratio: float = 0.0, world_config: WorldConfig | None = None,
                         op_key_order: Sequence[str] = MEM0_OP_KEYS, prompt_set: str = "memlora",
                         memory_order: str = DEFAULT_MEMORY_ORDER, ranker: RetrievalOrder | None = None,
                         sources: dict[str, str | Path] | None = None,
                         update_distractor_copies: int = 0) -> dict[str, dict[str, dict[str, int]]]:
    """Write ``DATA/<split>/<stage>.jsonl`` for the three text stages and ``DATA/locomo/<split>.json`` (the natural
    conversations LoCoMo-shaped, for ``memlora eval``), atomically: train and val from the natural files, each mixed
    with ``world_ratio`` world examples per natural example (the world of ``world_config`` and its split of the same
    name), test = the kept-aside demo conversation alone. ``sources`` overrides a natural file
    (``{"train": path}``). ``update_distractor_copies``: that many ``distractor_update_examples`` copies of the train
    split's natural update examples, added after the world mix (``memory_order="loop"`` only). Returns
    ``{split: {stage: {"natural": n, "world": m, "distractor copies": k}}}``."""
    op_key_order = check_op_key_order(op_key_order)
    ranker = check_memory_order(memory_order, ranker)
    if world_ratio < 0:
        raise DataError(f"the world mix ratio must be >= 0, got {world_ratio}")
    if update_distractor_copies and memory_order != "loop":
        raise DataError(f"distractor copies need memory_order='loop', got {memory_order!r}")
    files = {split: (sources or {}).get(name, name) for split, name in SPLIT_FILES.items()}
    conversations = {split: load_natural(source) for split, source in files.items()}  # every file checked before writing
    world = generate_world(world_config or WorldConfig()) if world_ratio > 0 else None
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for split, convs in conversations.items():
        write_json_atomic(Path(data_dir) / "locomo" / f"{split}.json", [to_locomo_sample(c) for c in convs])
        counts[split] = {}
        for stage in LOOP_STAGES:
            natural = natural_examples(convs, stage, op_key_order, prompt_set, memory_order, ranker)
            world_rows = []
            if world is not None and split != "test":
                world_rows = world_examples(world.split(split), stage, op_key_order, prompt_set, memory_order, ranker)
            rows = mix(natural, world_rows, world_ratio if world_rows else 0.0, f"natural-mix:{split}:{stage}")
            world_count = len(rows) - len(natural)
            copies = []
            if stage == "update" and split == "train" and update_distractor_copies:
                copies = distractor_update_examples(convs, update_distractor_copies, op_key_order, prompt_set, ranker)
                rows = mix(rows, copies, 1.0, f"natural-distractors:{split}:{stage}")
            write_jsonl_atomic(stage_path(data_dir, split, stage), rows)
            counts[split][stage] = {"natural": len(natural), "world": world_count, "distractor copies": len(copies)}
    return counts

