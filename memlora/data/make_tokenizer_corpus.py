"""Regenerate ``tokenizer_corpus.txt``: the English text the synthetic models' byte-level BPE tokenizer is trained on.

The corpus is written by this script (seeded, deterministic) from hand-written templates and word lists: everyday chat between
two people, the memory operations' prompts and JSON outputs (``{"facts": [...]}``, ``{"memory": [...]}``), dates, times, numbers
and names, so that the tokenizer splits the memory prompts into sensible pieces. Nothing in it comes from LoCoMo.

    python memlora/data/make_tokenizer_corpus.py            # rewrites memlora/data/tokenizer_corpus.txt

The shipped file is what the tokenizer is trained on; this script only documents how it was made.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20240601
TARGET_BYTES = 300_000

NAMES = [
    "Alice", "Bob", "Carla", "Daniel", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lena", "Maya", "Nikhil",
    "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wen", "Ximena", "Yusuf", "Zoe", "Caroline", "Melanie",
    "John", "Maria", "Priya", "Tom", "Sofia", "Lucas", "Aisha", "Mateo", "Hannah", "Oliver", "Chloe", "Ethan", "Nora", "Leo",
]
CITIES = [
    "Boston", "Lisbon", "Berlin", "Tokyo", "Nairobi", "Toronto", "Seattle", "Madrid", "Mumbai", "Melbourne", "Oslo", "Denver",
    "Chicago", "Paris", "Seoul", "Cape Town", "Austin", "Dublin", "Vienna", "Lima", "Porto", "Kyoto", "Vancouver", "Prague",
]
JOBS = [
    "nurse", "software engineer", "teacher", "painter", "chef", "accountant", "architect", "photographer", "pharmacist",
    "carpenter", "data analyst", "counselor", "pilot", "librarian", "dentist", "journalist", "electrician", "veterinarian",
]
HOBBIES = [
    "pottery", "running", "painting", "hiking", "chess", "baking", "swimming", "guitar", "gardening", "knitting", "yoga",
    "rock climbing", "photography", "birdwatching", "cycling", "surfing", "camping", "dancing", "reading", "sketching",
]
FOODS = [
    "sushi", "pizza", "ramen", "tacos", "pasta", "curry", "dumplings", "falafel", "salad", "pancakes", "paella", "pho",
    "cheesecake", "lasagna", "burritos", "croissants", "chocolate cake", "grilled salmon",
]
PETS = ["dog", "cat", "parrot", "rabbit", "hamster", "turtle", "goldfish", "puppy", "kitten"]
PET_NAMES = ["Luna", "Max", "Oscar", "Bella", "Milo", "Coco", "Pepper", "Biscuit", "Shadow", "Daisy"]
RELATIVES = ["mother", "father", "sister", "brother", "daughter", "son", "grandmother", "cousin", "husband", "wife", "partner"]
BOOKS = ["Dune", "Becoming", "Charlotte's Web", "The Hobbit", "Sapiens", "Little Women", "Educated", "Circe", "Matilda"]
EVENTS = [
    "a charity race", "a pottery workshop", "a job interview", "a family picnic", "a concert", "a support group meeting",
    "a camping trip", "a birthday party", "an art exhibition", "a beach trip", "a cooking class", "a school play", "a wedding",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FEELINGS = ["happy", "tired", "excited", "nervous", "proud", "relieved", "grateful", "stressed", "calm", "curious"]
RELATIVE_TIMES = ["yesterday", "last week", "last weekend", "two days ago", "last month", "this morning", "last Friday",
                  "next week", "next month", "tomorrow", "in two weeks", "last year"]
GREETINGS = ["Hey", "Hi", "Hello", "Hey there", "Good morning", "Hi again", "Long time no see"]
REPLIES = [
    "That's amazing!", "Wow, good for you.", "I'm so glad to hear that.", "Oh no, I'm sorry.", "That sounds like fun!",
    "Thanks for sharing.", "How did it go?", "Tell me more!", "That must have been hard.", "I love that!", "Congrats!",
    "Sounds great, keep it up.", "What made you decide that?", "I can't wait to hear more.", "Take care of yourself.",
]
PROSE = [
    "Memory matters because people expect an assistant to remember what they said last week.",
    "A small language model runs on the phone, so the conversation never leaves the device.",
    "Each memory has an id, a text, a timestamp and the ids of the dialogue turns it came from.",
    "When a fact changes, the old memory is updated; when it is no longer true, it is deleted.",
    "The question is answered from the most relevant memories, preferring the most recent one on conflict.",
    "Extract and organize relevant details from the conversation.",
    "Return the facts as a JSON list of short strings about the speakers.",
    "Compare the new facts with the old memories and decide for each one: ADD, UPDATE, DELETE or NONE.",
    "Answer the question in a few words using the memories and their timestamps.",
    "Look at the image and answer the question with a single word.",
    "Convert relative dates such as last week or yesterday into absolute dates using the timestamp.",
    "If nothing in the conversation is worth remembering, return an empty list.",
]
INSTRUCTIONS = [
    'Extract and organize relevant details. Response Format: Strictly JSON: {"facts": ["fact1", "fact2"]}.',
    'Old memories: {old}. New retrieved facts: {facts}. Return memory update in JSON format: {{"memory" : [{{"id" : "ID of '
    'the memory", "text" : "Content of the memory", "event" : "Operation, among ADD, UPDATE, DELETE, or NONE", '
    '"old_memory" : "Old memory content, only if UPDATE event"}}]}}',
    "Memories:\n{memories}\nQuestion: {question}\nAnswer in under six words.",
]


class Corpus:
    """Random text from the templates above; one instance per seed."""

    def __init__(self, seed: int = SEED):
        self.rng = random.Random(seed)

    def pick(self, items):
        return self.rng.choice(items)

    def date(self) -> str:
        r = self.rng
        hour = r.randint(1, 12)
        return f"{hour}:{r.randint(0, 59):02d} {r.choice(['am', 'pm'])} on {r.randint(1, 28)} {r.choice(MONTHS)}, {r.randint(2019, 2025)}"

    def iso_date(self) -> str:
        r = self.rng
        return f"{r.randint(2019, 2025)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"

    def statement(self, name: str) -> tuple[str, str]:
        """One chat line by ``name`` and the fact it states (third person)."""
        r, p = self.rng, self.pick
        city, job, hobby, food = p(CITIES), p(JOBS), p(HOBBIES), p(FOODS)
        pet, pet_name, rel, book, event = p(PETS), p(PET_NAMES), p(RELATIVES), p(BOOKS), p(EVENTS)
        when, feeling, n = p(RELATIVE_TIMES), p(FEELINGS), r.randint(2, 40)
        options = [
            (f"I just moved to {city} {when}, still unpacking boxes!", f"{name} moved to {city} {when}"),
            (f"I work as a {job} now, it's been {n} months.", f"{name} works as a {job}"),
            (f"I started {hobby} {when} and I'm hooked.", f"{name} started {hobby} {when}"),
            (f"I stopped doing {hobby}, I just don't have the time anymore.", f"{name} stopped doing {hobby}"),
            (f"My favorite food is {food}, I could eat it every day.", f"{name}'s favorite food is {food}"),
            (f"We adopted a {pet} named {pet_name} {when}.", f"{name} adopted a {pet} named {pet_name}"),
            (f"My {rel} turned {n + 20} {when}, we had a big dinner.", f"{name}'s {rel} turned {n + 20}"),
            (f"I'm reading {book} right now, it's so good.", f"{name} is reading {book}"),
            (f"I went to {event} {when} and felt really {feeling}.", f"{name} went to {event} {when}"),
            (f"I'm planning a trip to {city} in {p(MONTHS)}.", f"{name} plans a trip to {city} in {p(MONTHS)}"),
            (f"I ran {n} kilometers on {p(WEEKDAYS)}!", f"{name} ran {n} kilometers"),
            (f"I have {r.randint(1, 4)} kids and a {pet}.", f"{name} has kids and a {pet}"),
            (f"I'm allergic to {food}, sadly.", f"{name} is allergic to {food}"),
            (f"I've been volunteering at the shelter every {p(WEEKDAYS)}.", f"{name} volunteers at the shelter every week"),
            (f"Actually I don't live in {city} anymore, I moved back home.", f"{name} no longer lives in {city}"),
        ]
        return p(options)

    def conversation(self) -> str:
        a, b = self.rng.sample(NAMES, 2)
        lines = [f"DATE: {self.date()}", f"CONVERSATION between {a} and {b}:"]
        for i in range(self.rng.randint(4, 10)):
            speaker = a if i % 2 == 0 else b
            text, _ = self.statement(speaker)
            if self.rng.random() < 0.35:
                text = f"{self.pick(GREETINGS)} {a if speaker == b else b}! {text}"
            if self.rng.random() < 0.4:
                text = f"{self.pick(REPLIES)} {text}"
            lines.append(f'{speaker} said, "{text}"' if self.rng.random() < 0.2 else f"{speaker}: {text}")
        return "\n".join(lines)

    def chatml(self) -> str:
        name = self.pick(NAMES)
        turns = []
        facts = []
        for _ in range(self.rng.randint(1, 3)):
            text, fact = self.statement(name)
            facts.append(fact)
            turns.append(f"<|im_start|>user\n{name}: {text}<|im_end|>")
            turns.append(f"<|im_start|>assistant\n{self.pick(REPLIES)}<|im_end|>")
        turns.append(f"<|im_start|>system\n{INSTRUCTIONS[0]}<|im_end|>")
        turns.append("<|im_start|>assistant\n" + json.dumps({"facts": facts}) + "<|im_end|>")
        return "\n".join(turns)

    def update(self) -> str:
        name = self.pick(NAMES)
        old = [{"id": str(i), "text": self.statement(name)[1]} for i in range(self.rng.randint(0, 4))]
        facts = [self.statement(name)[1] for _ in range(self.rng.randint(1, 3))]
        memory = []
        for item in old:
            event = self.pick(["NONE", "NONE", "UPDATE", "DELETE"])
            entry = dict(item, event=event)
            if event == "UPDATE" and facts:
                entry["old_memory"], entry["text"] = item["text"], facts.pop()
            memory.append(entry)
        for fact in facts:
            memory.append({"id": str(len(memory)), "text": fact, "event": "ADD"})
        prompt = INSTRUCTIONS[1].format(old=json.dumps(old), facts=json.dumps(facts))
        return prompt + "\n" + json.dumps({"memory": memory}, indent=self.pick([None, 2]))

    def answer(self) -> str:
        name = self.pick(NAMES)
        memories = "\n".join(f"{self.iso_date()}: {self.statement(name)[1]}" for _ in range(self.rng.randint(2, 5)))
        question = self.pick([
            f"Where does {name} live?", f"What does {name} do for work?", f"When did {name} go to {self.pick(EVENTS)}?",
            f"What hobby did {name} give up?", f"What is the name of {name}'s {self.pick(PETS)}?", f"How old is {name}'s {self.pick(RELATIVES)}?",
            f"What is {name}'s favorite food?", f"Which book is {name} reading?",
        ])
        answer = self.pick([self.pick(CITIES), self.pick(JOBS), self.date().split(" on ")[1], self.pick(HOBBIES), self.pick(PET_NAMES),
                            str(self.rng.randint(20, 90)), self.pick(FOODS), self.pick(BOOKS), "Not mentioned"])
        return INSTRUCTIONS[2].format(memories=memories, question=question) + f"\nAnswer: {answer}"

    def misc(self) -> str:
        r = self.rng
        parts = [
            self.pick(PROSE),
            f"On {self.pick(WEEKDAYS)}, {r.randint(1, 28)} {self.pick(MONTHS)} {r.randint(1990, 2030)} at {r.randint(0, 23):02d}:{r.randint(0, 59):02d}.",
            f"The total was ${r.randint(1, 999)}.{r.randint(0, 99):02d} for {r.randint(1, 12)} items; {r.randint(0, 100)}% off.",
            f"Call me at {r.randint(100, 999)}-{r.randint(100, 999)}-{r.randint(1000, 9999)} or email {self.pick(NAMES).lower()}@example.com.",
            f'{{"id": "{r.randint(0, 50)}", "text": "{self.statement(self.pick(NAMES))[1]}", "event": "{self.pick(["ADD", "UPDATE", "DELETE", "NONE"])}"}}',
            f'{{"question": "What color is the {self.pick(PETS)}?", "answer": "{self.pick(["brown", "white", "black", "orange", "grey"])}"}}',
            f"[image: a photo of {self.pick(['a dog on a beach', 'a bowl of ' + self.pick(FOODS), 'a painting of a sunset', 'a mountain trail', 'a cake with candles'])}]",
            "<think>\nLet me check the memories first.\n</think>",
        ]
        return self.pick(parts)

    def text(self, target_bytes: int = TARGET_BYTES) -> str:
        makers = [self.conversation, self.conversation, self.chatml, self.update, self.answer, self.misc, self.misc]
        chunks, size = [], 0
        while size < target_bytes:
            chunk = self.pick(makers)()
            chunks.append(chunk)
            size += len(chunk.encode("utf-8")) + 2
        return "\n\n".join(chunks) + "\n"


def main() -> None:
    out = Path(__file__).resolve().parent / "tokenizer_corpus.txt"
    out.write_text(Corpus().text(), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
