"""The memory loop.

- Scripted engine (queued model outputs, ``helpers.ScriptedEngine``): a multi-turn John/Maria conversation built around
  the paper's appendix A.2 example gives exactly the expected table, history and rejections (ADD, NONE, UPDATE, DELETE,
  bad ids, garbage output), with real embeddings, real retrieval and the real SQLite/FAISS store.
- Real TorchEngine on the tiny model with two real peft adapters: each stage runs with its configured adapter (token ids
  equal to peft's with that adapter alone), random-model output never breaks ``add``/``answer``, and it all runs offline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memlora.errors import AdapterError, ImageError, MemloraError
from memlora.runtime.embedder import Embedder, SentenceTransformerEmbedder
from memlora.runtime.engine import Engine
from memlora.runtime.memory import AddResult, AnswerResult, Memory, MemoryConfig
from memlora.runtime.store import MemoryStore, UnknownMemoryError
from memlora.runtime.torch_engine import TorchEngine

from helpers import FakeEmbedder, ScriptedEngine, make_store, shown_facts, shown_ids


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder(threads=1)


# ----------------------------------------------------------------------------------------------------------------------
# Scripted engine
# ----------------------------------------------------------------------------------------------------------------------


def test_the_shared_doubles_follow_the_runtime_protocols():
    engine, embedder = ScriptedEngine(reply=lambda messages, adapter: f"{adapter} reply"), FakeEmbedder(dim=4)
    assert isinstance(engine, Engine) and isinstance(embedder, Embedder)
    assert engine.generate([{"role": "user", "content": "a b"}], adapter="update").text == "update reply"
    engine.reply = None
    with pytest.raises(MemloraError, match="no output left"):
        engine.generate([{"role": "user", "content": "a b"}])
    assert [c["adapter"] for c in engine.calls] == ["update", None]
    vectors = embedder.encode(["x", "y", "x"])
    assert vectors.shape == (3, 4) and vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1)
    assert np.array_equal(vectors[0], vectors[2]) and not np.array_equal(vectors[0], vectors[1])


def ops(*items) -> str:
    return json.dumps({"memory": list(items)})


# The paper's appendix A.2: the conversation turn, GPT-OSS-120B's raw extraction and raw update responses (verbatim).
A2_MESSAGES = [
    {"role": "assistant", "content": "Maria: Looks good! How did the extra funding help with building the school?", "dia_id": "D2:1"},
    {"role": "user", "content": "John: It enabled needed repairs and renovations, making the learning environment safer "
                                "and more modern for students.", "dia_id": "D2:2"},
]
A2_EXTRACTION = (
    'analysisWe need to extract facts from the conversation. The conversation includes an assistant line: "Maria: Looks '
    'good! How did the extra funding help with building the school?" Then user line: "John: It enabled needed repairs and '
    'renovations, making the learning environment safer and more modern for students." We need to extract relevant facts '
    "about the user. The user is John, speaking about extra funding enabling repairs and renovations, making learning "
    'environment safer and more modern for students. So facts: "Extra funding enabled needed repairs and renovations" and '
    '"Repairs and renovations made learning environment safer and more modern for students". Also maybe "User name is '
    'John". But the user didn\u2019t explicitly state his name? The line is prefixed "John:" which indicates his name. We '
    'can capture "Name is John". However, the instruction says to extract facts from user and assistant messages only. The '
    "user message includes his name as a prefix. We can include that. Thus facts list: [\"Name is John\", \"Extra funding "
    'enabled needed repairs and renovations", "Repairs and renovations made learning environment safer and more modern for '
    'students"]. Return JSON.assistantfinal{"facts": ["Name is John", "Extra funding enabled needed repairs and '
    'renovations", "Repairs and renovations made learning environment safer and more modern for students"]}'
)
A2_FACTS = ["Name is John", "Extra funding enabled needed repairs and renovations",
            "Repairs and renovations made learning environment safer and more modern for students"]
A2_UPDATE = (
    "analysisWe need to compare retrieved facts with existing memory. Existing memory list: id0: \u2019Name is John\u2019 "
    "id1: \u2019Passionate about improving infrastructure\u2019 id2: \u2019Shared a picture of a school after receiving "
    "funding\u2019 id3: \u2019Loves helping the community\u2019 id4: \u2019Wants schools and infrastructure to be properly "
    "funded\u2019 id5: \u2019Passionate about improving education\u2019 Retrieved facts: 1. \u2019Name is John\u2019 2013 "
    "already present (id0). So event NONE. 2. \u2019Extra funding enabled needed repairs and renovations\u2019 2013 new "
    "info. Not present. So ADD. 3. \u2019Repairs and renovations made learning environment safer and more modern for "
    "students\u2019 2013 also new. So ADD as well. Thus we will have three new entries with new IDs. Existing IDs are "
    "strings \u20190\u2019 to \u20195\u2019. So next IDs: \u20196\u2019, \u20197\u2019, \u20198\u2019. Let\u2019s construct "
    'JSON. assistantfinal{ "memory": [ { "id": "0", "text": "Name is John", "event": "NONE" }, { "id": "1", "text": '
    '"Passionate about improving infrastructure", "event": "NONE" }, { "id": "2", "text": "Shared a picture of a school '
    'after receiving funding", "event": "NONE" }, { "id": "3", "text": "Loves helping the community", "event": "NONE" }, '
    '{ "id": "4", "text": "Wants schools and infrastructure to be properly funded", "event": "NONE" }, { "id": "5", '
    '"text": "Passionate about improving education", "event": "NONE" }, { "id": "6", "text": "Extra funding enabled needed '
    'repairs and renovations", "event": "ADD" }, { "id": "7", "text": "Repairs and renovations made learning environment '
    'safer and more modern for students", "event": "ADD" } ] }'
)

TS = ["1:56 pm on 8 May, 2023", "7:55 pm on 9 June, 2023", "2:31 pm on 17 July, 2023", "8:56 pm on 20 July, 2023",
      "6:09 pm on 8 August, 2023", "1:00 pm on 9 August, 2023"]
COMMUNITY_V2 = "Loves helping the community by volunteering at the homeless shelter every weekend"


def test_scripted_conversation_gives_the_exact_store(embedder):
    engine = ScriptedEngine()
    memory = Memory(engine, embedder, make_store(), MemoryConfig())
    real_ids = lambda: [r.id for r in memory.store.get_all("john")]  # noqa: E731

    # Maria's own store-mate memories: they must never reach John's prompts.
    engine.queue += ['{"facts": ["Name is Maria", "Loves helping the community"]}',
                     ops({"id": "0", "text": "Name is Maria", "event": "ADD"},
                         {"id": "1", "text": "Loves helping the community", "event": "ADD"})]
    memory.add([{"role": "user", "content": "Maria: I'm Maria, I love helping my community."}], "maria", timestamp=TS[0])

    # Turn 1: three facts, empty memory -> three ADDs.
    engine.queue += ['{"facts": ["Name is John", "Passionate about improving infrastructure", "Loves helping the community"]}',
                     ops(*[{"id": str(i), "text": t, "event": "ADD"} for i, t in enumerate(
                         ["Name is John", "Passionate about improving infrastructure", "Loves helping the community"])])]
    r1 = memory.add([
        {"role": "assistant", "content": "Maria: Hey John, what have you been up to?", "dia_id": "D1:1"},
        {"role": "user", "content": "John: Hi Maria! Working on infrastructure projects and helping my community.", "dia_id": "D1:2"},
    ], "john", timestamp=TS[0])
    assert shown_ids(engine.calls[-1]["messages"]) == {}  # Maria's memories are not John's
    assert [(e.event, e.id, e.text) for e in r1.events] == [
        ("ADD", "mem-0003", "Name is John"), ("ADD", "mem-0004", "Passionate about improving infrastructure"),
        ("ADD", "mem-0005", "Loves helping the community")]
    assert r1.rejected == [] and set(r1.generations) == {"extraction", "update"}

    # Turn 2: reasoning + code fence around the facts; NONE on a shown memory, three ADDs, one duplicate ADD.
    engine.queue += [
        '<think>John shared a photo of the school.</think>\n```json\n{"facts": ["Shared a picture of a school after '
        'receiving funding", "Wants schools and infrastructure to be properly funded", "Passionate about improving '
        'education"]}\n```',
        lambda m: ops({"id": shown_ids(m)["Name is John"], "text": "Name is John", "event": "NONE"},
                      {"id": "0", "text": "Shared a picture of a school after receiving funding", "event": "ADD"},
                      {"id": "1", "text": "Wants schools and infrastructure to be properly funded", "event": "ADD"},
                      {"id": "2", "text": "Passionate about improving education", "event": "ADD"},
                      {"id": "9", "text": "Loves helping the community", "event": "ADD"}),
    ]
    r2 = memory.add([
        {"role": "user", "content": "John: Here's the school after the funding came through!", "dia_id": "D1:3"},
        {"role": "assistant", "content": "Maria: Wow, that's great!", "dia_id": "D1:4"},
    ], "john", timestamp=TS[1])
    assert [e.event for e in r2.events] == ["ADD", "ADD", "ADD"]
    duplicate = shown_ids(engine.calls[-1]['messages'])['Loves helping the community']
    assert [r.reason for r in r2.rejected] == [f"update: ADD duplicates memory {duplicate}"]

    # Turn 3: the paper's A.2 example, model outputs verbatim (GPT-OSS reasoning, NONE ids of the paper, ADD ids 6/7).
    engine.queue += [A2_EXTRACTION, A2_UPDATE]
    r3 = memory.add(A2_MESSAGES, "john", timestamp=TS[2])
    assert r3.facts == A2_FACTS
    prompt = engine.calls[-1]["messages"]
    assert shown_facts(prompt) == A2_FACTS
    shown = shown_ids(prompt)
    assert sorted(shown.values(), key=int) == [str(i) for i in range(len(shown))]  # small ids 0..n-1
    assert set(shown) <= {r.text for r in memory.get_all("john")} and "Name is John" in shown
    assert [(e.event, e.id, e.text) for e in r3.events] == [
        ("ADD", "mem-0009", "Extra funding enabled needed repairs and renovations"),
        ("ADD", "mem-0010", "Repairs and renovations made learning environment safer and more modern for students")]
    assert r3.rejected == []

    # Turn 4: UPDATE of a shown memory.
    engine.queue += [
        f'{{"facts": ["{COMMUNITY_V2}"]}}',
        lambda m: ops({"id": shown_ids(m)["Loves helping the community"], "text": COMMUNITY_V2, "event": "UPDATE",
                       "old_memory": "Loves helping the community"}),
    ]
    r4 = memory.add([{"role": "user", "content": "John: I volunteer at the homeless shelter every weekend now.",
                      "dia_id": "D3:1"}], "john", timestamp=TS[3])
    assert [e.to_dict() for e in r4.events] == [
        {"id": "mem-0005", "memory": COMMUNITY_V2, "event": "UPDATE", "previous_memory": "Loves helping the community"}]

    # Turn 5: DELETE, plus an out-of-range UPDATE and a second operation on the same id (both rejected), and a NONE.
    engine.queue += [
        '{"facts": ["No longer passionate about improving infrastructure"]}',
        lambda m: ops({"id": shown_ids(m)["Passionate about improving infrastructure"], "text": "", "event": "DELETE"},
                      {"id": "99", "text": "Hacked", "event": "UPDATE", "old_memory": "?"},
                      {"id": shown_ids(m)["Passionate about improving infrastructure"], "text": "x", "event": "UPDATE"},
                      {"id": shown_ids(m)["Passionate about improving education"], "text": "", "event": "NONE"}),
    ]
    r5 = memory.add([
        {"role": "user", "content": "John: Honestly, I'm done with infrastructure.", "dia_id": "D4:1"},
        {"role": "assistant", "content": "Maria: Education it is, then!", "dia_id": "D4:2"},
    ], "john", timestamp=TS[4])
    assert [(e.event, e.id, e.text) for e in r5.events] == [("DELETE", "mem-0004", "Passionate about improving infrastructure")]
    assert len(r5.rejected) == 2 and all(r.reason.startswith("update: ") for r in r5.rejected)
    assert "out of range" in r5.rejected[0].reason

    # Turn 6: prose instead of JSON -> no update call, nothing changes, the rejection is recorded.
    before = memory.get_all("john")
    engine.queue += ["Sorry, I cannot help with that."]
    r6 = memory.add([{"role": "user", "content": "John: ok bye", "dia_id": "D5:1"}], "john", timestamp=TS[5])
    assert r6.facts == [] and r6.events == [] and set(r6.generations) == {"extraction"}
    assert [r.reason for r in r6.rejected] == ["extraction: no facts JSON found"]
    assert memory.get_all("john") == before
    assert engine.queue == []

    # The exact table...
    assert [(r.id, r.text, r.timestamp, r.source_ids) for r in memory.get_all("john")] == [
        ("mem-0003", "Name is John", TS[0], ["D1:1", "D1:2"]),
        ("mem-0005", COMMUNITY_V2, TS[3], ["D1:1", "D1:2", "D3:1"]),
        ("mem-0006", "Shared a picture of a school after receiving funding", TS[1], ["D1:3", "D1:4"]),
        ("mem-0007", "Wants schools and infrastructure to be properly funded", TS[1], ["D1:3", "D1:4"]),
        ("mem-0008", "Passionate about improving education", TS[1], ["D1:3", "D1:4"]),
        ("mem-0009", "Extra funding enabled needed repairs and renovations", TS[2], ["D2:1", "D2:2"]),
        ("mem-0010", "Repairs and renovations made learning environment safer and more modern for students", TS[2], ["D2:1", "D2:2"]),
    ]
    assert [(r.id, r.text) for r in memory.get_all("maria")] == [("mem-0001", "Name is Maria"), ("mem-0002", "Loves helping the community")]
    # ...the exact history (batch 1 was Maria's)...
    hist = lambda mid: [(h.event, h.old_text, h.new_text, h.batch, h.actor) for h in memory.history(mid)]  # noqa: E731
    assert hist("mem-0004") == [("ADD", None, "Passionate about improving infrastructure", 2, "memory.add"),
                                ("DELETE", "Passionate about improving infrastructure", None, 6, "memory.add")]
    assert hist("mem-0005") == [("ADD", None, "Loves helping the community", 2, "memory.add"),
                                ("UPDATE", "Loves helping the community", COMMUNITY_V2, 5, "memory.add")]
    assert hist("mem-0009") == [("ADD", None, "Extra funding enabled needed repairs and renovations", 4, "memory.add")]
    # ...and the recorded rejections.
    assert [(r.batch, r.reason.split(":")[0]) for r in memory.store.rejections("john")] == [
        (3, "update"), (6, "update"), (6, "update"), (7, "extraction")]
    # The model never saw a real id.
    prompts_text = json.dumps([c["messages"] for c in engine.calls])
    assert not any(mid in prompts_text for mid in real_ids() + ["mem-0004"])

    # Answer: the generation expert sees the user's memories with their timestamps.
    engine.queue += ["Volunteers at the homeless shelter\n"]
    answer = memory.answer("Where does John volunteer every weekend?", "john", k=3)
    assert isinstance(answer, AnswerResult) and answer.text == "Volunteers at the homeless shelter"
    assert "mem-0005" in [hit.record.id for hit in answer.memories] and len(answer.memories) == 3
    assert f"[{TS[3]}] {COMMUNITY_V2}" in engine.calls[-1]["messages"][-1]["content"]
    assert "Name is Maria" not in engine.calls[-1]["messages"][-1]["content"]
    assert [c["adapter"] for c in engine.calls] == ["extraction", "update"] * 6 + ["extraction", "generation"]


def test_direct_api(embedder):
    engine = ScriptedEngine()
    memory = Memory(engine, embedder, make_store(), MemoryConfig())
    engine.queue += ['{"facts": ["Likes tea", "Has a dog named Rex"]}',
                     ops({"id": "0", "text": "Likes tea", "event": "ADD"}, {"id": "1", "text": "Has a dog named Rex", "event": "ADD"})]
    memory.add("I like tea and I have a dog named Rex", "ann", metadata={"source": "chat"})
    tea, rex = memory.get_all("ann")
    assert tea.metadata == {"source": "chat"} and memory.get(tea.id) == tea
    assert memory.search("What pet does Ann have?", "ann", k=1)[0].record.id == rex.id
    assert memory.search("What pet does Ann have?", "bob") == []
    event = memory.update(tea.id, "Likes green tea")
    assert (event.event, event.text, event.old_text) == ("UPDATE", "Likes green tea", "Likes tea")
    assert memory.search("green tea", "ann", k=1)[0].record.text == "Likes green tea"  # re-embedded
    assert memory.delete(rex.id).event == "DELETE" and memory.get(rex.id) is None
    with pytest.raises(UnknownMemoryError):
        memory.delete(rex.id)
    assert [h.event for h in memory.history(tea.id)] == ["ADD", "UPDATE"]
    assert [e.event for e in memory.delete_all("ann")] == ["DELETE"] and memory.get_all("ann") == []
    memory.reset()
    assert memory.history(tea.id) == []
    with pytest.raises(MemloraError, match="user_id"):
        memory.add("I like tea", "")
    with pytest.raises(MemloraError, match="role"):
        memory.add([{"role": "narrator", "content": "hi"}], "ann")
    assert len(engine.calls) == 2  # neither bad call reached the model


@pytest.mark.parametrize("extraction, update, expected_events, n_rejected", [
    ("", None, [], 1),                                                        # empty output
    ('{"facts": ["Likes tea", 42, ""]}', ops({"id": "0", "text": "Likes tea", "event": "ADD"}), ["ADD"], 2),  # wrong types
    ('{"facts": ["Likes tea"', ops({"id": "0", "text": "Likes tea", "event": "ADD"}), ["ADD"], 0),  # truncated, repaired
    ('{"facts": ["Likes tea"]}', '{"memory": [{"id": "0", "text": "Likes tea", "event": "ADD"}, {"event": "EXPLODE"}', ["ADD"], 1),
    ('{"facts": ["Likes tea"]}', "I think we should add it.", [], 1),         # prose
    ('{"facts": ["Likes tea"]}', ops({"id": "0", "text": "x", "event": "DELETE"}), [], 1),  # DELETE with nothing shown
    ('{"facts": {"a": 1}}', None, [], 1),                                     # facts not a list
])
def test_malformed_output_never_breaks_add(embedder, extraction, update, expected_events, n_rejected):
    engine = ScriptedEngine()
    memory = Memory(engine, embedder, make_store(), MemoryConfig())
    engine.queue += [extraction] + ([update] if update is not None else [])
    result = memory.add("I like tea", "ann")
    assert isinstance(result, AddResult) and engine.queue == []
    assert [e.event for e in result.events] == expected_events
    assert len(result.rejected) == n_rejected
    assert len(memory.store.rejections("ann")) == n_rejected
    assert [r.text for r in memory.get_all("ann")] == ["Likes tea"] * len(expected_events)


def test_stage_adapters_are_configuration():
    engine = ScriptedEngine(adapters=("extraction", "update", "generation", "special"))
    store = make_store()
    assert Memory(engine, None, store).stage_adapters == {
        "extraction": "extraction", "update": "update", "generation": "generation", "vqa": None}
    custom = Memory(engine, None, store, MemoryConfig(stage_adapters={"update": None, "generation": "special"}))
    assert custom.stage_adapters == {"extraction": "extraction", "update": None, "generation": "special", "vqa": None}
    base_only = Memory(ScriptedEngine(adapters=()), None, store)  # the paper's "Mem0 with an SLM" baseline
    assert set(base_only.stage_adapters.values()) == {None}
    with pytest.raises(AdapterError, match="missing"):
        Memory(engine, None, store, MemoryConfig(stage_adapters={"update": "missing"}))
    with pytest.raises(MemloraError, match="unknown stage"):
        Memory(engine, None, store, MemoryConfig(stage_adapters={"summarise": None}))
    with pytest.raises(MemloraError, match="unknown prompt set"):
        Memory(engine, None, store, MemoryConfig(prompt_set="nope"))
    with pytest.raises(MemloraError, match="model_dir"):
        Memory.from_config(MemoryConfig())


def test_mem0_prompt_set_and_token_budgets(embedder):
    engine = ScriptedEngine()
    config = MemoryConfig(prompt_set="mem0", max_new_tokens={"extraction": 7})
    memory = Memory(engine, embedder, make_store(), config)
    engine.queue += ['{"facts": []}']
    memory.add("hello", "ann")
    assert engine.calls[0]["messages"][0]["content"].startswith("You are a Personal Information Organizer")
    assert engine.calls[0]["max_new_tokens"] == 7
    engine.queue += ["fine"]
    memory.answer("how are you?", "ann")
    assert engine.calls[1]["max_new_tokens"] == 64  # default kept for stages left out


@pytest.mark.parametrize("config, expected", [
    (MemoryConfig(), {"extraction": 0, "update": 0, "generation": 0}),  # off by default
    (MemoryConfig(min_new_tokens={"extraction": 1, "update": 1}), {"extraction": 1, "update": 1, "generation": 0}),
    (MemoryConfig(min_new_tokens={"generation": 3}), {"extraction": 0, "update": 0, "generation": 3}),
])
def test_min_new_tokens_per_stage(embedder, config, expected):
    engine = ScriptedEngine()
    memory = Memory(engine, embedder, make_store(), config)
    engine.queue += ['{"facts": ["Has a dog"]}', '{"memory": [{"id": "0", "text": "Has a dog", "event": "ADD"}]}', "Rex"]
    memory.add("I have a dog", "ann")
    memory.answer("What pet?", "ann")
    assert {s: c["min_new_tokens"] for s, c in zip(("extraction", "update", "generation"), engine.calls)} == expected


def test_extraction_never_ends_at_its_first_token(tiny_model, embedder):
    # a real engine whose first greedy extraction token is declared EOS: without the stage minimum the output is empty
    engine = TorchEngine(tiny_model("qwen2"), threads=1)
    probe = Memory(engine, embedder, make_store(), MemoryConfig(min_new_tokens={}, max_new_tokens={"extraction": 6}))
    first = probe.extract_facts([{"role": "user", "content": "I have a dog named Rex."}])[2].token_ids[0]
    engine.eos_ids = {first}
    outputs = {}
    for name, minimums in (("none", {}), ("one", {"extraction": 1})):
        memory = Memory(engine, embedder, make_store(), MemoryConfig(min_new_tokens=minimums, max_new_tokens={"extraction": 6}))
        outputs[name] = memory.extract_facts([{"role": "user", "content": "I have a dog named Rex."}])[2]
    assert outputs["none"].token_ids == [first] and outputs["none"].text == ""
    assert outputs["one"].token_ids[0] != first and outputs["one"].completion_tokens >= 2


def test_image_needs_a_vision_engine(embedder):
    memory = Memory(ScriptedEngine(), embedder, make_store(), MemoryConfig())
    with pytest.raises(ImageError, match="no vision"):
        memory.answer("What colour is the car?", "ann", image="car.png")
    vision = ScriptedEngine(adapters=("vqa",), supports_images=True)
    memory = Memory(vision, embedder, make_store(), MemoryConfig())
    vision.queue += ['{"answer": "red", "reason": "the car is red"}']
    result = memory.answer("What colour is the car?", "ann", image="car.png")
    assert result.text == "red" and vision.calls[0]["adapter"] == "vqa" and vision.calls[0]["images"] == ["car.png"]


# ----------------------------------------------------------------------------------------------------------------------
# Real TorchEngine + real peft adapters on the tiny model
# ----------------------------------------------------------------------------------------------------------------------

CONVERSATION = [
    [{"role": "assistant", "content": "Maria: Hey John, how was the weekend?", "dia_id": "D1:1"},
     {"role": "user", "content": "John: Great, I took my dog Rex hiking in the mountains.", "dia_id": "D1:2"}],
    [{"role": "user", "content": "John: I started a new job as a teacher last month.", "dia_id": "D1:3"}],
]
BUDGET = {"extraction": 10, "update": 10, "generation": 10}


class RecordingEngine:
    """Passes every call to the real engine unchanged and remembers (adapter, messages, budget, generation)."""

    def __init__(self, inner):
        self.inner, self.adapters, self.calls = inner, inner.adapters, []
        self.supports_images = inner.supports_images

    def generate(self, messages, adapter=None, images=None, max_new_tokens=128, **options):
        generation = self.inner.generate(messages, adapter, images, max_new_tokens, **options)
        self.calls.append((adapter, messages, max_new_tokens, generation))
        return generation

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


@pytest.fixture(scope="module")
def torch_engine(tiny_model, tiny_adapters):
    return TorchEngine(tiny_model("qwen2"), tiny_adapters, threads=1)


def peft_greedy(base_dir, adapter_dir, messages, max_new_tokens):
    """Token ids of transformers' greedy generate on a fresh model with only this adapter (None: the plain model)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval()
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("stage_adapters, expected", [
    (None, {"extraction": "extraction", "update": "update", "generation": None}),
    ({"extraction": "update", "update": "extraction", "generation": "update"},
     {"extraction": "update", "update": "extraction", "generation": "update"}),
])
def test_each_stage_runs_its_adapter(torch_engine, embedder, tiny_model, tiny_adapters, stage_adapters, expected):
    engine = RecordingEngine(torch_engine)
    memory = Memory(engine, embedder, MemoryStore(None, dim=embedder.dim),
                    MemoryConfig(stage_adapters=stage_adapters, max_new_tokens=BUDGET))
    result = memory.add(CONVERSATION[0], "john", timestamp="1:56 pm on 8 May, 2023")
    stages = list(result.generations)  # extraction, and update if the random model happened to produce facts
    memory.decide_updates(["Has a dog named Rex"], memory.search("dog", "john"))  # the update stage, always
    memory.answer("What is the name of John's dog?", "john")
    stages += ["update", "generation"]
    assert [call[0] for call in engine.calls] == [expected[s] for s in stages]
    for adapter, messages, budget, generation in engine.calls:
        adapter_dir = tiny_adapters / adapter if adapter else None
        assert generation.token_ids == peft_greedy(tiny_model("qwen2"), adapter_dir, messages, budget), adapter


def test_random_model_output_never_breaks_the_loop(tiny_model, tiny_adapters, embedder):
    # min_new_tokens: no early EOS, so every stage emits a full budget of random-model text
    engine = TorchEngine(tiny_model("qwen2"), tiny_adapters, threads=1, min_new_tokens=24)
    memory = Memory(engine, embedder, MemoryStore(None, dim=embedder.dim),
                    MemoryConfig(max_new_tokens={"extraction": 24, "update": 24, "generation": 24}))
    for turn in CONVERSATION:
        result = memory.add(turn, "john")
        assert isinstance(result, AddResult)
        assert result.generations["extraction"].completion_tokens == 24
        assert not result.facts or "update" in result.generations
    # the update expert's garbage, given real memories to (mis)manage, still changes nothing invalid
    resolved, rejected, generation = memory.decide_updates(["Has a dog named Rex"], [])
    assert generation.completion_tokens == 24 and all(op.event == "ADD" for op in resolved)
    answer = memory.answer("What is the name of John's dog?", "john")
    assert isinstance(answer.text, str) and answer.generation.completion_tokens == 24
    assert memory.store.rejections("john")  # the unusable output was recorded, not lost


def test_add_and_answer_offline(no_network, tiny_model, tiny_adapters, tmp_path):
    config = dict(store_dir=str(tmp_path / "store"), threads=1, max_new_tokens=BUDGET)
    with Memory.from_pretrained(tiny_model("qwen2"), adapters=str(tiny_adapters), **config) as memory:
        assert memory.stage_adapters["extraction"] == "extraction" and memory.stage_adapters["generation"] is None
        result = memory.add(CONVERSATION[1], "john", timestamp="2:31 pm on 17 July, 2023")
        answer = memory.answer("What is John's job?", "john")
        n_rejections = len(memory.store.rejections("john"))
    assert isinstance(result, AddResult) and isinstance(answer, AnswerResult)
    assert answer.generation.prompt_tokens > 0
    reopened = MemoryStore(tmp_path / "store", dim=384)  # what add() recorded is on disk
    assert len(reopened.rejections("john")) == n_rejections and len(reopened.get_all("john")) == len(result.events)
    reopened.close()


@pytest.mark.parametrize(("own", "serving", "expected"), [
    ({}, None, {"extraction": 128, "update": 256, "generation": 64, "vqa": 64}),
    ({"extraction": 40, "generation": None}, None, {"extraction": 40, "update": 256, "generation": 64, "vqa": 64}),
    ({"extraction": 40, "update": 90}, ("update",), {"extraction": 128, "update": 90, "generation": 64, "vqa": 64}),
    ({"unknown": 5}, None, {"extraction": 128, "update": 256, "generation": 64, "vqa": 64}),
])
def test_stage_budgets(own, serving, expected):
    from memlora.runtime.memory import stage_budgets

    assert stage_budgets(own, serving=serving) == expected


def test_stage_budgets_over_other_defaults():
    from memlora.runtime.memory import stage_budgets

    assert stage_budgets({"generation": 24}, {"extraction": 64, "generation": 16}) == {"extraction": 64, "generation": 24}
