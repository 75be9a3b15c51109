"""A synthetic memory world with exact ground truth: bAbI for memory systems.

People have attributes (city, job, partner, pets, hobbies, favourite food, dated travel plans). Two of them talk over several
dated sessions; facts are stated in varied surface forms (paraphrase templates, fillers, small talk with nothing to remember),
later CHANGED (-> UPDATE), RETRACTED (-> DELETE) or REPEATED (-> NONE). Because the world writes every sentence itself, it knows
exactly, for every message pair of Mem0's ingestion protocol (one store per speaker, two messages at a time, roles swapped per
store):

- the canonical facts to extract (the store owner's facts only, in Mem0's subject-less style, e.g. ``"Lives in Lisbon"``),
- the memory update operations given the memories the loop would show (small integer ids),
- and, at the end, questions about the latest state (and about plan dates) with one exact short answer.

Everything is a pure function of ``WorldConfig`` (seeded ``random.Random``; no global state). The text is kept regular on
purpose: a tiny model pretrained on it learns the operations in minutes on a CPU. Exports live in ``distill/world_export.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Sequence

from memlora.errors import DataError

SPLITS = ("train", "val", "test")

# ----------------------------------------------------------------------------------------------------------------- vocabulary
NAMES = (
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kate", "Leo", "Maya", "Nora",
    "Omar", "Paula", "Rosa", "Sam", "Tara", "Vera", "Will", "Yara", "Zoe", "Adam", "Carl", "Dina", "Eric", "Fiona",
    "Gina", "Ivan", "Jake", "Lena", "Mark", "Nina", "Oscar", "Ruth", "Theo", "Ella", "Max", "Lucy",
)
CITIES = (
    "Lisbon", "Porto", "Madrid", "Berlin", "Paris", "Rome", "Vienna", "Prague", "Oslo", "Dublin", "Boston", "Denver",
    "Seattle", "Austin", "Chicago", "Toronto", "Sydney", "Tokyo", "Seoul", "Lima", "Cairo", "Athens", "Warsaw", "Milan",
)
JOBS = (
    "nurse", "teacher", "baker", "pilot", "lawyer", "chef", "dentist", "architect", "engineer", "farmer", "plumber",
    "designer", "journalist", "librarian", "pharmacist", "photographer", "accountant", "electrician",
)
FOODS = ("sushi", "pizza", "tacos", "ramen", "curry", "paella", "lasagna", "falafel", "dumplings", "pancakes", "risotto", "burgers")
HOBBIES = ("tennis", "chess", "golf", "football", "volleyball", "badminton", "basketball", "cricket", "poker", "squash")
SPECIES = ("dog", "cat", "rabbit", "parrot", "hamster", "turtle")
PET_NAMES = ("Rex", "Milo", "Luna", "Coco", "Daisy", "Oreo", "Simba", "Pepper", "Biscuit", "Ziggy", "Bruno", "Kiwi")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December",
)

# --------------------------------------------------------------------------------------------------------- canonical facts
# slot kind -> canonical fact text; {v} is the value, {a} "a"/"an" for the value, {s} a pet species,
# {c} a plan's city, {d} a plan's date.
CANONICAL = {  # Mem0's style: no subject (a store holds one person's memories), e.g. "Lives in Lisbon"
    "city": "Lives in {v}",
    "job": "Works as {a} {v}",
    "food": "Favourite food is {v}",
    "partner": "Partner is {v}",
    "pet": "Has a {s} named {v}",
    "hobby": "Plays {v}",
    "plan": "Plans to visit {c} on {d}",
}
RETRACTION = {
    "hobby": "No longer plays {v}",
    "plan": "Cancelled the trip to {c}",
    "partner": "Broke up with {v}",
}

# Surface forms, first person, by (slot kind, event). Several per fact; a tiny model must map them all to one canonical fact.
TEMPLATES = {
    ("city", "state"): (
        "I live in {v}.", "My home is in {v}.", "I have been living in {v} for a while now.", "These days I am based in {v}.",
    ),
    ("city", "change"): (
        "Big news: I moved to {v}!", "I just relocated to {v}.", "We finally moved to {v} last week.", "I live in {v} now.",
    ),
    ("city", "repeat"): ("As you know, I live in {v}.", "Still living in {v}, still loving it.", "Life in {v} is good, as always."),
    ("job", "state"): (
        "I work as {a} {v}.", "I am {a} {v}.", "My job? I am {a} {v}.", "I have been working as {a} {v} for years.",
    ),
    ("job", "change"): (
        "I quit my old job and became {a} {v}.", "I started a new job as {a} {v}.", "I am {a} {v} now, a whole new career.",
    ),
    ("job", "repeat"): ("Work is busy, being {a} {v} is never boring.", "As you know, I work as {a} {v}."),
    ("food", "state"): (
        "My favourite food is {v}.", "I love {v} more than any other food.", "Nothing beats {v} for me.", "I could eat {v} every day.",
    ),
    ("food", "change"): (
        "These days my favourite food is {v}.", "I like {v} best now, more than anything.", "My new favourite food is {v}.",
    ),
    ("food", "repeat"): ("I had {v} again, still my favourite food.", "You know me, {v} is my favourite."),
    ("partner", "state"): (
        "My partner {v} says hello.", "I live with my partner {v}.", "{v} and I have been together for two years.",
        "My partner is called {v}.",
    ),
    ("partner", "change"): ("I have a new partner, {v}.", "I am seeing someone new, their name is {v}.",
                            "I met {v} and we are together now."),
    ("partner", "repeat"): ("{v} and I are still together.", "My partner {v} sends greetings."),
    ("partner", "retract"): ("{v} and I broke up.", "I am no longer with {v}.", "{v} and I split up last month."),
    ("pet", "state"): (
        "I have a {s} named {v}.", "My {s} {v} is so cute.", "We adopted a {s}, {v} is the name.", "Let me tell you about my {s}, {v}.",
    ),
    ("pet", "repeat"): ("My {s} {v} is doing great.", "{v}, my {s}, says hi."),
    ("hobby", "state"): (
        "I play {v} every weekend.", "I have been playing {v} a lot.", "{v} is my hobby, I play it often.", "I joined a {v} club.",
    ),
    ("hobby", "repeat"): ("I still play {v} every week.", "I played {v} again yesterday."),
    ("hobby", "retract"): ("I do not play {v} any more.", "I gave up {v}.", "I quit playing {v}, it was not for me."),
    ("plan", "state"): (
        "I am flying to {c} on {d}.", "I plan to visit {c} on {d}.", "On {d} I am going to {c}.", "I booked a trip to {c} for {d}.",
    ),
    ("plan", "change"): ("My trip to {c} moved to {d}.", "I changed my {c} trip to {d}.", "Now I fly to {c} on {d} instead."),
    ("plan", "repeat"): ("I am still going to {c} on {d}.", "Counting the days to my {c} trip on {d}."),
    ("plan", "retract"): ("I cancelled my trip to {c}.", "The trip to {c} is off.", "I am not going to {c} after all."),
}
FILLER_PREFIXES = ("", "", "", "Oh, by the way, ", "Guess what? ", "Honestly, ", "So, ", "Well, ")
FILLER_SUFFIXES = ("", "", "", " How about you?", " It has been a busy month.", " Anyway.", " Crazy, right?")
SMALL_TALK = (
    "The weather has been lovely lately.", "Did you watch the game yesterday?", "I am so tired today.", "Haha, that is funny.",
    "Good to hear from you!", "Tell me more!", "It has been a long week.", "I should sleep more.", "What a day it was.",
    "I read a good book last night.", "The traffic was terrible this morning.", "Time flies, does it not?",
    "I made coffee too strong again.",
    "Let us talk again soon.", "How have you been?", "I cannot believe it is already the weekend.",
)
MENTIONS = (  # mentions of a value that are NOT facts about the speaker
    "I saw a documentary about {city}.", "A friend told me {city} is beautiful.", "I read an article about {food}.",
    "My neighbour is {job_a} {job}, funny coincidence.", "There was a {hobby} match on TV.", "I watched a film set in {city}.",
)
REACTIONS = {
    "city": ("{v} sounds lovely!", "Oh nice, {v}!", "I have never been to {v}."),
    "job": ("Being {a} {v} must be interesting.", "Wow, {a} {v}!", "That is a great job."),
    "food": ("Yum, {v}!", "I like {v} too.", "Good choice."),
    "partner": ("Say hi to {v} from me!", "Oh, {v}!", "That is lovely."),
    "pet": ("I love {s}s!", "{v} is a cute name.", "Send me a photo of {v}!"),
    "hobby": ("{v} sounds fun.", "I tried {v} once.", "Nice!"),
    "plan": ("Have a great time in {c}!", "{c} is wonderful.", "Enjoy the trip!"),
    "retract": ("Oh, I see.", "That is a pity.", "Sorry to hear that.", "Fair enough."),
}

CALLBACKS = {  # the other speaker recalls a known fact: conversation that repeats values, with nothing new to remember
    "city": ("How is life in {v}?", "Is {v} still treating you well?"),
    "job": ("How is work, still busy being {a} {v}?", "Do you still enjoy being {a} {v}?"),
    "food": ("Had any good {v} lately?",),
    "partner": ("How is {v} doing?", "Say hi to {v} for me."),
    "pet": ("How is {v} doing?", "Does {v} still keep you busy?"),
    "hobby": ("Still playing {v}?", "How is the {v} going?"),
    "plan": ("Are you ready for {c}?", "Looking forward to {c}?"),
}

QUESTIONS = {
    "city": ("Where does {n} live?", "{v}"),
    "job": ("What is {n}'s job?", "{v}"),
    "food": ("What is {n}'s favourite food?", "{v}"),
    "partner": ("Who is {n}'s partner?", "{v}"),
    "pet": ("What is the name of {n}'s {s}?", "{v}"),
    "hobby": ("Does {n} play {v}?", "Yes"),
    "plan": ("When is {n} visiting {c}?", "{d}"),
}
QA_CATEGORY = {"plan": 2}  # LoCoMo categories: 2 temporal; everything else 4 single-hop
DEFAULT_CATEGORY = 4


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def format_date(day: date) -> str:
    """The world's one date format, used in utterances, facts and answers: ``12 June 2023``."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def format_session_time(day: date, minutes: int) -> str:
    """LoCoMo's session timestamp format: ``1:56 pm on 8 May, 2023``."""
    hour, minute = divmod(minutes, 60)
    suffix = "am" if hour < 12 else "pm"
    hour12 = hour % 12 or 12
    return f"{hour12}:{minute:02d} {suffix} on {day.day} {MONTHS[day.month - 1]}, {day.year}"


# ------------------------------------------------------------------------------------------------------------ configuration
@dataclass
class WorldConfig:
    """How big and how varied the world is. Everything generated is a pure function of these fields."""

    seed: int = 0
    """Seed of the world: same config, same conversations, byte for byte."""
    n_conversations: int = 300
    """Conversations in the world (two speakers each), split train/val/test by conversation."""
    val_fraction: float = 0.1
    """Share of conversations held out for validation (early stopping)."""
    test_fraction: float = 0.1
    """Share of conversations held out for the final test (benchmark, demo)."""
    n_sessions: int = 4
    """Dated sessions per conversation."""
    max_pets: int = 2
    """Most pets a person has."""
    max_hobbies: int = 3
    """Most hobbies a person starts with."""
    max_plans: int = 2
    """Most travel plans a person states."""
    change_rate: float = 0.5
    """Probability that a changeable fact (city, job, food, partner, plan date) is later CHANGED (-> UPDATE)."""
    retract_rate: float = 0.35
    """Probability that a hobby, plan or partner is later RETRACTED (-> DELETE)."""
    repeat_rate: float = 0.3
    """Probability that a fact is later REPEATED unchanged (-> NONE)."""
    small_talk_rounds: int = 1
    """Extra rounds of small talk (nothing to remember) per session, on top of the facts."""
    mention_rate: float = 0.15
    """Probability that a small-talk turn mentions a city/food/job without stating a fact about the speaker."""
    callback_rate: float = 0.35
    """Probability that a small-talk turn asks about something the other speaker said before (a value repeated, no new fact)."""
    combine_rate: float = 0.2
    """Probability that two statements of one speaker share one turn (two facts in one message)."""
    templates_per_fact: int = 0
    """Paraphrase templates used per (fact, event); 0 = all of them (a smaller number makes an easier world)."""
    start_year: int = 2023
    """Year of the first session."""

    def __post_init__(self) -> None:
        if self.n_conversations < 3:
            raise DataError("a world needs at least 3 conversations (one per split)")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise DataError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
        if self.n_sessions < 2:
            raise DataError("a world conversation needs at least 2 sessions (facts first, changes later)")


# ------------------------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class StatedFact:
    """One canonical fact a speaker states in a turn."""

    slot: str
    """Which memory it is about: ``city``, ``job``, ``food``, ``partner``, ``pet:<species>``, ``hobby:<name>``, ``plan:<city>``."""
    text: str
    """The canonical fact string to extract, e.g. ``Lives in Lisbon``."""
    event: str
    """``state`` | ``change`` | ``repeat`` | ``retract``."""
    memory: str
    """The memory text this fact concerns: itself, or (for a retraction) the fact it removes."""


@dataclass
class WorldTurn:
    speaker: str
    dia_id: str
    text: str
    facts: list[StatedFact] = field(default_factory=list)


@dataclass
class WorldSession:
    index: int
    day: date
    date_time: str
    turns: list[WorldTurn]


MEM0_OP_KEYS = ("id", "text", "event", "old_memory")
"""Key order of an update op in Mem0's JSON, as the update prompt shows it."""


def check_op_key_order(key_order: Sequence[str]) -> tuple[str, ...]:
    """``key_order`` as a tuple, or a ``DataError`` unless it is a permutation of ``MEM0_OP_KEYS``."""
    order = tuple(key_order)
    if sorted(order) != sorted(MEM0_OP_KEYS):
        raise DataError(f"update key order {','.join(order)!r} must name each of {', '.join(MEM0_OP_KEYS)} exactly once")
    return order


@dataclass(frozen=True)
class MemoryOp:
    """One gold memory-update operation, in the loop's terms (ids are the small integers the prompt shows)."""

    event: str
    """``ADD`` | ``UPDATE`` | ``DELETE`` | ``NONE``."""
    id: str
    text: str
    old_memory: str | None = None

    def as_json(self, key_order: Sequence[str] = MEM0_OP_KEYS) -> dict:
        """The op as the update JSON writes it, its keys in ``key_order`` (a permutation of ``MEM0_OP_KEYS``;
        ``old_memory`` only on UPDATE)."""
        item = {"id": self.id, "text": self.text, "event": self.event}
        if self.event == "UPDATE":
            item["old_memory"] = self.old_memory
        return {key: item[key] for key in key_order if key in item}


@dataclass
class UpdateCase:
    """The gold update for one message pair in one store: the memories shown (small ids) and the operations."""

    old_memories: list[dict]
    """``[{"id": "0", "text": ...}, ...]`` as the loop shows them."""
    facts: list[str]
    ops: list[MemoryOp]


@dataclass
class PairTruth:
    """Gold truth for one ingestion step: one message pair seen by one speaker's store."""

    owner: str
    session: int
    timestamp: str
    messages: list[dict]
    """``[{"role": "user"|"assistant", "content": "<Speaker>: <text>", "dia_id": ...}]``; the owner's turns are ``user``."""
    facts: list[str]
    """Canonical facts the extraction expert must produce (the owner's, in order)."""
    update: UpdateCase | None
    """Gold update (None when there is nothing to extract)."""
    memory_after: list[str]
    """The owner's memory texts after this step, in insertion order."""


@dataclass
class WorldQA:
    question: str
    answer: str
    speaker: str
    slot: str
    category: int
    evidence: list[str]


@dataclass
class Checkpoint:
    """The gold state after one session: every speaker's memories and the questions that state answers."""

    session: int
    memories: dict[str, list[tuple[str, str]]]
    """speaker -> [(timestamp of the session that last wrote it, memory text)], in insertion order."""
    qa: list[WorldQA]


@dataclass
class WorldConversation:
    sample_id: str
    split: str
    speaker_a: str
    speaker_b: str
    sessions: list[WorldSession]
    pairs: list[PairTruth]
    """Gold truth of every ingestion step, in ``ingestion_batches`` order."""
    checkpoints: list[Checkpoint]
    """Gold state after each session; the last one is the conversation's final state."""

    @property
    def speakers(self) -> tuple[str, str]:
        return (self.speaker_a, self.speaker_b)

    @property
    def qa(self) -> list[WorldQA]:
        """Questions about the final state (what the benchmark and the LoCoMo-shaped export ask)."""
        return self.checkpoints[-1].qa

    @property
    def final_memories(self) -> dict[str, list[tuple[str, str]]]:
        return self.checkpoints[-1].memories


@dataclass
class World:
    config: WorldConfig
    conversations: list[WorldConversation]

    def split(self, name: str) -> list[WorldConversation]:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return [c for c in self.conversations if c.split == name]


# --------------------------------------------------------------------------------------------------------------- generator
@dataclass
class _Memory:
    text: str
    timestamp: str
    day: date
    dia_id: str
    event: str


@dataclass
class _Snapshot:
    session: int
    memory: dict[str, dict[str, _Memory]]
    retracted: dict[str, dict[str, str]]


@dataclass
class _Event:
    """A planned statement: at ``session``, ``speaker`` says something about ``slot`` (kind + value)."""

    session: int
    kind: str
    slot: str
    event: str
    values: dict


class _Generator:
    def __init__(self, config: WorldConfig, index: int):
        self.config = config
        self.rng = random.Random(f"memlora-world:{config.seed}:{index}")
        self.index = index

    # -- helpers
    def pick_template(self, kind: str, event: str) -> str:
        options = TEMPLATES[(kind, event)]
        if self.config.templates_per_fact > 0:
            options = options[: self.config.templates_per_fact]
        return self.rng.choice(options)

    @staticmethod
    def fill(template: str, name: str, values: dict) -> str:
        value = values.get("v", "")
        return template.format(n=name, v=value, a=article(value), s=values.get("s", ""), c=values.get("c", ""), d=values.get("d", ""))

    def canonical(self, kind: str, name: str, values: dict, retract: bool = False) -> str:
        table = RETRACTION if retract else CANONICAL
        return self.fill(table[kind], name, values)

    # -- people and their histories
    def person_events(self, name: str, others: set[str], first_day: date) -> list[_Event]:
        cfg, rng = self.config, self.rng
        last = cfg.n_sessions - 1
        early = max(1, (cfg.n_sessions + 1) // 2)  # initial facts land in the first half of the sessions
        events: list[_Event] = []

        def schedule_followups(kind: str, slot: str, start: int, values: dict, change_pool, can_retract: bool) -> None:
            if start >= last:
                return
            later = rng.randint(start + 1, last)
            roll = rng.random()
            change_rate = cfg.change_rate if change_pool is not None else 0.0
            if roll < change_rate:
                new_values = change_pool(values)
                events.append(_Event(later, kind, slot, "change", new_values))
                if later < last and rng.random() < cfg.repeat_rate:
                    events.append(_Event(rng.randint(later + 1, last), kind, slot, "repeat", new_values))
            elif can_retract and roll < change_rate + cfg.retract_rate:
                events.append(_Event(later, kind, slot, "retract", values))
            elif rng.random() < cfg.repeat_rate:
                events.append(_Event(later, kind, slot, "repeat", values))

        def other_than(pool, current):
            return rng.choice([x for x in pool if x != current])

        city = rng.choice(CITIES)
        start = rng.randint(0, early - 1)
        events.append(_Event(start, "city", "city", "state", {"v": city}))
        schedule_followups("city", "city", start, {"v": city}, lambda v: {"v": other_than(CITIES, v["v"])}, False)

        job = rng.choice(JOBS)
        start = rng.randint(0, early - 1)
        events.append(_Event(start, "job", "job", "state", {"v": job}))
        schedule_followups("job", "job", start, {"v": job}, lambda v: {"v": other_than(JOBS, v["v"])}, False)

        food = rng.choice(FOODS)
        start = rng.randint(0, early - 1)
        events.append(_Event(start, "food", "food", "state", {"v": food}))
        schedule_followups("food", "food", start, {"v": food}, lambda v: {"v": other_than(FOODS, v["v"])}, False)

        if rng.random() < 0.7:
            partner = rng.choice([n for n in NAMES if n not in others])
            start = rng.randint(0, early - 1)
            events.append(_Event(start, "partner", "partner", "state", {"v": partner}))
            pool = [n for n in NAMES if n not in others and n != partner]
            schedule_followups("partner", "partner", start, {"v": partner}, lambda v: {"v": rng.choice(pool)}, True)

        for species in rng.sample(SPECIES, rng.randint(0, cfg.max_pets)):
            values = {"v": rng.choice(PET_NAMES), "s": species}
            start = rng.randint(0, last)
            events.append(_Event(start, "pet", f"pet:{species}", "state", values))
            schedule_followups("pet", f"pet:{species}", start, values, None, False)

        hobbies = rng.sample(HOBBIES, rng.randint(1, cfg.max_hobbies) + 1)
        for i, hobby in enumerate(hobbies):
            # the last sampled hobby is only ever asked about ("Does X play golf?" -> No): never stated
            if i == len(hobbies) - 1:
                events.append(_Event(-1, "hobby", f"hobby:{hobby}", "never", {"v": hobby}))
                continue
            start = rng.randint(0, last)
            events.append(_Event(start, "hobby", f"hobby:{hobby}", "state", {"v": hobby}))
            schedule_followups("hobby", f"hobby:{hobby}", start, {"v": hobby}, None, True)

        for plan_city in rng.sample([c for c in CITIES if c != city], rng.randint(0, cfg.max_plans)):
            start = rng.randint(0, last)
            base = first_day + timedelta(days=30 * (cfg.n_sessions + 1) + rng.randint(0, 60))
            values = {"c": plan_city, "d": format_date(base)}

            def move_date(v, base=base, plan_city=plan_city):
                return {"c": plan_city, "d": format_date(base + timedelta(days=rng.randint(1, 40)))}

            events.append(_Event(start, "plan", f"plan:{plan_city}", "state", values))
            schedule_followups("plan", f"plan:{plan_city}", start, values, move_date, True)
        return events

    def utterance(self, name: str, ev: _Event) -> tuple[str, StatedFact]:
        kind = ev.kind
        template = self.pick_template(kind, ev.event)
        text = capitalize(self.fill(template, name, ev.values))
        retract = ev.event == "retract"
        fact_text = self.canonical(kind, name, ev.values, retract=retract)
        memory = self.canonical(kind, name, ev.values) if retract else fact_text
        return text, StatedFact(slot=ev.slot, text=fact_text, event=ev.event, memory=memory)

    def decorate(self, text: str) -> str:
        """Wrap a statement in filler words (``Guess what? ...``, ``... Anyway.``): same fact, another surface form."""
        prefix = self.rng.choice(FILLER_PREFIXES)
        if prefix:
            first = text.split(" ", 1)[0].strip(",.!?:")
            keep = prefix.endswith("? ") or first == "I" or first in NAMES or first in CITIES or first in PET_NAMES
            text = prefix + (text if keep else text[0].lower() + text[1:])
        return text + self.rng.choice(FILLER_SUFFIXES)

    def small_talk(self) -> str:
        if self.rng.random() < self.config.mention_rate:
            job = self.rng.choice(JOBS)
            return self.rng.choice(MENTIONS).format(
                city=self.rng.choice(CITIES), food=self.rng.choice(FOODS), job=job, job_a=article(job), hobby=self.rng.choice(HOBBIES)
            )
        return self.rng.choice(SMALL_TALK)

    def callback(self, about: dict) -> str | None:
        """A question about one of the other speaker's known facts (``about``: slot -> (kind, values)), or None."""
        if not about:
            return None
        kind, values = about[self.rng.choice(sorted(about))]
        value = values.get("v", "")
        template = self.rng.choice(CALLBACKS[kind])
        return capitalize(template.format(v=value, a=article(value), s=values.get("s", ""), c=values.get("c", "")))

    def reaction(self, fact: StatedFact, values: dict) -> str:
        key = "retract" if fact.event == "retract" else fact.slot.split(":")[0]
        template = self.rng.choice(REACTIONS[key])
        value = values.get("v", "")
        return capitalize(template.format(v=value, a=article(value), s=values.get("s", ""), c=values.get("c", "")))

    # -- one conversation
    def conversation(self, split: str) -> WorldConversation:
        cfg, rng = self.config, self.rng
        speaker_a, speaker_b = rng.sample(NAMES, 2)
        first_day = date(cfg.start_year, rng.randint(1, 6), rng.randint(1, 28))
        days = [first_day]
        for _ in range(cfg.n_sessions - 1):
            days.append(days[-1] + timedelta(days=rng.randint(5, 30)))
        plans = {
            speaker_a: self.person_events(speaker_a, {speaker_a, speaker_b}, first_day),
            speaker_b: self.person_events(speaker_b, {speaker_a, speaker_b}, first_day),
        }

        sessions: list[WorldSession] = []
        known: dict[str, dict[str, tuple[str, dict]]] = {speaker_a: {}, speaker_b: {}}  # what each speaker has said so far
        for s in range(cfg.n_sessions):
            # each speaker's planned statements for the session being written, in a random order, some sharing one turn
            queues: dict[str, list[list[_Event]]] = {}
            for speaker in (speaker_a, speaker_b):
                todo = [e for e in plans[speaker] if e.session == s]
                rng.shuffle(todo)
                groups: list[list[_Event]] = []
                for ev in todo:
                    slots = {e.slot for e in groups[-1]} if groups else set()
                    if groups and len(groups[-1]) == 1 and ev.slot not in slots and rng.random() < cfg.combine_rate:
                        groups[-1].append(ev)
                    else:
                        groups.append([ev])
                queues[speaker] = groups
            rounds = max(len(queues[speaker_a]), len(queues[speaker_b])) + cfg.small_talk_rounds
            slots_a = self._spread(queues[speaker_a], rounds)
            slots_b = self._spread(queues[speaker_b], rounds)
            first, second = (speaker_a, speaker_b) if rng.random() < 0.5 else (speaker_b, speaker_a)
            order = {speaker_a: slots_a, speaker_b: slots_b}
            turns: list[WorldTurn] = []
            previous: tuple[StatedFact, dict] | None = None
            other = {speaker_a: speaker_b, speaker_b: speaker_a}
            for r in range(rounds):
                for speaker in (first, second):
                    group = order[speaker][r]
                    dia_id = f"D{s + 1}:{len(turns) + 1}"
                    if group:
                        parts, facts = [], []
                        for ev in group:
                            text, fact = self.utterance(speaker, ev)
                            parts.append(text)
                            facts.append(fact)
                            if ev.event == "retract":
                                known[speaker].pop(ev.slot, None)
                            else:
                                known[speaker][ev.slot] = (ev.kind, ev.values)
                        text = self.decorate(" ".join(parts))
                        turns.append(WorldTurn(speaker, dia_id, text, facts))
                        previous = (facts[-1], group[-1].values)
                    else:
                        callback = self.callback(known[other[speaker]]) if rng.random() < cfg.callback_rate else None
                        if previous is not None and rng.random() < 0.6:
                            text = self.reaction(*previous)
                        elif callback is not None:
                            text = callback
                        else:
                            text = self.small_talk()
                        turns.append(WorldTurn(speaker, dia_id, text, []))
                        previous = None
            minutes = rng.randint(8 * 60, 21 * 60)
            sessions.append(WorldSession(s + 1, days[s], format_session_time(days[s], minutes), turns))

        sample_id = f"world-{cfg.seed}-{self.index:04d}"
        speakers = (speaker_a, speaker_b)
        pairs, snapshots = self._ground_truth(sessions, speakers)
        checkpoints = [
            Checkpoint(
                session=snap.session,
                memories={s: [(m.timestamp, m.text) for m in snap.memory[s].values()] for s in speakers},
                qa=self.questions(plans, snap, speakers),
            )
            for snap in snapshots
        ]
        return WorldConversation(sample_id, split, speaker_a, speaker_b, sessions, pairs, checkpoints)

    def _spread(self, groups: list[list[_Event]], rounds: int) -> list[list[_Event]]:
        """Place the groups in ``rounds`` slots, in order, with empty slots (small talk) in between."""
        slots: list[list[_Event]] = [[] for _ in range(rounds)]
        positions = sorted(self.rng.sample(range(rounds), len(groups)))
        for pos, group in zip(positions, groups):
            slots[pos] = group
        return slots

    # -- ground truth: run Mem0's protocol over the exact facts
    def _ground_truth(self, sessions, speakers):
        """Replay Mem0's protocol (``memlora.corpus.locomo.ingestion_batches`` order: per session, speaker A's store then
        B's, two messages at a time) over the exact facts; record the gold truth of every step and a snapshot per session."""
        memory: dict[str, dict[str, _Memory]] = {s: {} for s in speakers}  # slot -> memory, in insertion order
        retracted: dict[str, dict[str, str]] = {s: {} for s in speakers}  # slot -> dia_id of the retraction
        pairs: list[PairTruth] = []
        snapshots: list[_Snapshot] = []
        for session in sessions:
            for owner in speakers:
                turns = session.turns
                for i in range(0, len(turns), 2):
                    batch = turns[i : i + 2]
                    messages = [
                        {"role": "user" if t.speaker == owner else "assistant", "content": f"{t.speaker}: {t.text}", "dia_id": t.dia_id}
                        for t in batch
                    ]
                    stated = [(f, t.dia_id) for t in batch if t.speaker == owner for f in t.facts]
                    update = self._update_case(memory[owner], stated) if stated else None
                    for fact, dia_id in stated:
                        state = memory[owner]
                        if fact.event == "retract":
                            retracted[owner][fact.slot] = dia_id
                            del state[fact.slot]
                        elif fact.slot in state and state[fact.slot].text == fact.text:
                            continue  # repeated: nothing changes
                        else:
                            state[fact.slot] = _Memory(fact.text, session.date_time, session.day, dia_id, fact.event)
                            retracted[owner].pop(fact.slot, None)
                    pairs.append(
                        PairTruth(
                            owner=owner,
                            session=session.index,
                            timestamp=session.date_time,
                            messages=messages,
                            facts=[f.text for f, _ in stated],
                            update=update,
                            memory_after=[m.text for m in memory[owner].values()],
                        )
                    )
            snapshots.append(
                _Snapshot(session.index, {s: dict(memory[s]) for s in speakers}, {s: dict(retracted[s]) for s in speakers})
            )
        return pairs, snapshots

    def _update_case(self, memory: dict[str, "_Memory"], stated) -> UpdateCase:
        """Memories as the loop would show them (the related ones plus a few others, shuffled, ids 0..n-1) and the gold ops."""
        rng = self.rng
        related = [f.slot for f, _ in stated if f.slot in memory]
        others = [slot for slot in memory if slot not in related]
        shown_slots = related + rng.sample(others, min(len(others), rng.randint(0, 5)))
        rng.shuffle(shown_slots)
        old = [{"id": str(i), "text": memory[slot].text} for i, slot in enumerate(shown_slots)]
        id_of = {slot: str(i) for i, slot in enumerate(shown_slots)}
        ops: list[MemoryOp] = []
        next_id = len(old)
        for fact, _ in stated:
            if fact.event == "retract":
                if fact.slot not in memory:
                    raise AssertionError(f"world bug: retraction of a memory that does not exist: {fact}")
                ops.append(MemoryOp("DELETE", id_of[fact.slot], memory[fact.slot].text))
            elif fact.slot in memory and memory[fact.slot].text == fact.text:
                ops.append(MemoryOp("NONE", id_of[fact.slot], fact.text))
            elif fact.slot in memory:
                ops.append(MemoryOp("UPDATE", id_of[fact.slot], fact.text, old_memory=memory[fact.slot].text))
            else:
                ops.append(MemoryOp("ADD", str(next_id), fact.text))
                next_id += 1
        return UpdateCase(old_memories=old, facts=[f.text for f, _ in stated], ops=ops)

    def questions(self, plans, snapshot: "_Snapshot", speakers) -> list[WorldQA]:
        """Questions about the state in ``snapshot``, each with one exact short answer and its evidence dia_ids."""
        qa: list[WorldQA] = []
        for speaker in speakers:
            state, retracted = snapshot.memory[speaker], snapshot.retracted[speaker]
            for ev in plans[speaker]:
                if ev.event not in ("state", "never"):
                    continue
                kind, slot = ev.kind, ev.slot
                template, answer_template = QUESTIONS[kind]
                if slot in state:
                    mem = state[slot]
                    values = self._values_from_fact(kind, mem.text, ev.values)
                    qa.append(WorldQA(self.fill(template, speaker, values), self.fill(answer_template, speaker, values),
                                      speaker, slot, QA_CATEGORY.get(kind, DEFAULT_CATEGORY), [mem.dia_id]))
                    if kind == "city" and mem.event == "change":  # a move: its date is the memory's timestamp
                        qa.append(WorldQA(f"When did {speaker} move to {values['v']}?", format_date(mem.day), speaker,
                                          slot, 2, [mem.dia_id]))
                elif kind == "hobby" and (ev.event == "never" or slot in retracted):  # retracted or never stated: No
                    evidence = [retracted[slot]] if slot in retracted else []
                    qa.append(WorldQA(self.fill(template, speaker, ev.values), "No", speaker, slot, DEFAULT_CATEGORY, evidence))
        return qa

    @staticmethod
    def _values_from_fact(kind: str, text: str, values: dict) -> dict:
        """Recover the latest values of a slot from its final canonical fact (a change may have replaced them)."""
        out = dict(values)
        if kind == "plan":
            out["d"] = text.rsplit(" on ", 1)[1]
        elif kind in ("city", "job", "food", "partner", "pet", "hobby"):
            out["v"] = text.rsplit(" ", 1)[1]
        return out


def generate_conversation(config: WorldConfig, index: int) -> WorldConversation:
    """Conversation ``index`` of the world ``config`` (independent of the others: any index can be regenerated alone)."""
    if not 0 <= index < config.n_conversations:
        raise DataError(f"conversation index {index} outside 0..{config.n_conversations - 1}")
    return _Generator(config, index).conversation(split_of(config, index))


def split_of(config: WorldConfig, index: int) -> str:
    """train/val/test by conversation: the last ``test_fraction`` are test, the ones before them val."""
    n = config.n_conversations
    n_test = max(1, round(n * config.test_fraction)) if config.test_fraction > 0 else 0
    n_val = max(1, round(n * config.val_fraction)) if config.val_fraction > 0 else 0
    if index >= n - n_test:
        return "test"
    if index >= n - n_test - n_val:
        return "val"
    return "train"


def generate_world(config: WorldConfig | None = None) -> World:
    """Every conversation of the world, in index order."""
    config = config or WorldConfig()
    return World(config, [generate_conversation(config, i) for i in range(config.n_conversations)])


def conversation_text(conv: WorldConversation) -> str:
    """The raw text of a conversation (what the base model is pretrained on): session headers and ``Speaker: text`` lines."""
    lines = []
    for session in conv.sessions:
        lines.append(f"Session {session.index}, {session.date_time}")
        lines.extend(f"{t.speaker}: {t.text}" for t in session.turns)
        lines.append("")
    return "\n".join(lines)
