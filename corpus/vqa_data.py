"""A procedural VQA benchmark (own code, Pillow): the paper's three hard question types with exact one-word answers.

Paper 3.3 / appendix C.1 chose the instruction types a small VLM failed most: (2) an unusual object in the scene,
(3) the colour of a small portion of the image, (4) a countable object quantity. Here each type is drawn procedurally, so
the answer is exact by construction:

- ``count``:   several copies of one shape among other shapes -> "How many circles are in the image?" -> "3"
- ``colour``:  a small square in one corner, big shapes elsewhere -> "What colour is the small square in the top left
               corner?" -> "blue"
- ``unusual``: many copies of one shape and one odd shape -> "Which shape is the odd one out in the scene?" -> "star"

Every example is seeded (``seed``, split, index), so the same arguments give the same images and questions byte for byte;
splits use disjoint seed streams. Each scene also gets a BLIP-like generic caption (what Mem0's caption-only baseline
sees: the objects, never the counted number, the small region's colour or the odd shape).

Written in the distillation format (``DATA/<split>/vqa.jsonl``, stage "vqa", the exact ``vqa_messages`` prompt, target
``{"answer": ..., "reason": ...}``, ``images`` relative to ``DATA``, ``source`` "procedural"), images under ``DATA/images/<split>/``.

    write_vqa_benchmark("DATA/", VQABenchmarkConfig(train=600, val=60, test=120, seed=0))
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from memlora.corpus.dataset import stage_path, write_jsonl_atomic
from memlora.errors import DataError
from memlora.runtime.prompts import vqa_messages

QUESTION_TYPES = ("count", "colour", "unusual")
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 210, 20),
    "purple": (140, 40, 180), "orange": (250, 130, 0), "white": (250, 250, 250), "black": (10, 10, 10),
}
SHAPES = ("circle", "square", "triangle", "star")
CORNERS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
BACKGROUND = (128, 128, 128)
SOURCE = "procedural"


@dataclass
class VQABenchmarkConfig:
    """Sizes and drawing parameters of the procedural VQA set."""

    train: int = 600
    """Examples in the train split."""
    val: int = 60
    """Examples in the val split."""
    test: int = 120
    """Examples in the test split."""
    seed: int = 0
    """Base seed (split and index are mixed in)."""
    side: int = 112
    """Image width and height in pixels."""
    types: tuple[str, ...] = QUESTION_TYPES
    """Question types drawn, in rotation."""
    max_count: int = 5
    """Largest count asked about (answers 1..max_count)."""
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
    """Colours a small region can have."""


@dataclass
class VQAItem:
    """One procedural question about one image."""

    id: str
    qtype: str
    question: str
    answer: str
    reason: str
    caption: str
    image: object = field(repr=False)  # PIL.Image

    def target(self) -> str:
        return json.dumps({"answer": self.answer, "reason": self.reason}, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------------------------- drawing
def _draw_shape(draw, shape: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "star":
        import math

        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        points = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.4
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
        draw.polygon(points, fill=colour)
    else:  # pragma: no cover - internal
        raise ValueError(shape)


def _grid_cells(side: int, n: int = 4) -> list[tuple[int, int, int, int]]:
    """Boxes of an n x n grid with a margin (objects never overlap)."""
    cell = side // n
    pad = max(2, cell // 6)
    return [(c * cell + pad, r * cell + pad, (c + 1) * cell - pad, (r + 1) * cell - pad) for r in range(n) for c in range(n)]


def _canvas(side: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (side, side), BACKGROUND)
    return image, ImageDraw.Draw(image)


def make_count(rng: random.Random, cfg: VQABenchmarkConfig):
    shape = rng.choice(SHAPES)
    others = [s for s in SHAPES if s != shape]
    n = rng.randint(1, cfg.max_count)
    n_other = rng.randint(1, 4)
    cells = rng.sample(_grid_cells(cfg.side), n + n_other)
    image, draw = _canvas(cfg.side)
    colours = list(COLOURS.values())[:6]
    for box in cells[:n]:
        _draw_shape(draw, shape, box, rng.choice(colours))
    for box in cells[n:]:
        _draw_shape(draw, rng.choice(others), box, rng.choice(colours))
    question = f"How many {shape}s are in the image?"
    reason = f"There {'is' if n == 1 else 'are'} {n} {shape}{'' if n == 1 else 's'} among the shapes."
    return image, question, str(n), reason, "a picture of colourful shapes on a grey background"


def make_colour(rng: random.Random, cfg: VQABenchmarkConfig):
    colour = rng.choice(cfg.colours)
    corner = rng.choice(list(CORNERS))
    cx, cy = CORNERS[corner]
    image, draw = _canvas(cfg.side)
    # big distractor shapes in the middle, in other colours
    mid = cfg.side // 2
    for _ in range(rng.randint(1, 3)):
        r = rng.randint(cfg.side // 8, cfg.side // 5)
        x, y = mid + rng.randint(-10, 10), mid + rng.randint(-10, 10)
        _draw_shape(draw, rng.choice(SHAPES), (x - r, y - r, x + r, y + r), COLOURS[rng.choice([c for c in cfg.colours if c != colour])])
    small = max(8, cfg.side // 8)
    margin = 4
    x0 = margin if cx == 0 else cfg.side - margin - small
    y0 = margin if cy == 0 else cfg.side - margin - small
    draw.rectangle((x0, y0, x0 + small, y0 + small), fill=COLOURS[colour])
    question = f"What colour is the small square in the {corner} corner?"
    reason = f"The small square in the {corner} corner is {colour}."
    return image, question, colour, reason, "a picture of a few large shapes on a grey background"


def make_unusual(rng: random.Random, cfg: VQABenchmarkConfig):
    common, odd = rng.sample(SHAPES, 2)
    cells = rng.sample(_grid_cells(cfg.side), rng.randint(5, 9))
    image, draw = _canvas(cfg.side)
    colour = COLOURS[rng.choice(cfg.colours)]  # one colour for all: only the shape is unusual
    odd_at = rng.randrange(len(cells))
    for k, box in enumerate(cells):
        _draw_shape(draw, odd if k == odd_at else common, box, colour)
    question = "Which shape is the odd one out in the scene?"
    reason = f"Every other object is a {common}; only one is a {odd}."
    return image, question, odd, reason, f"a picture of many {common}s on a grey background"


MAKERS = {"count": make_count, "colour": make_colour, "unusual": make_unusual}
SPLIT_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_029}


def generate_split(split: str, n: int, cfg: VQABenchmarkConfig) -> list[VQAItem]:
    """``n`` items of ``split``; item i uses its own RNG seeded from (seed, split, i): deterministic and independent."""
    if split not in SPLIT_OFFSETS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLIT_OFFSETS)}")
    unknown = [t for t in cfg.types if t not in MAKERS]
    if unknown or not cfg.types:
        raise DataError(f"unknown VQA question type(s) {unknown}: choose from {', '.join(QUESTION_TYPES)}")
    items = []
    for i in range(n):
        qtype = cfg.types[i % len(cfg.types)]
        rng = random.Random(f"memlora-vqa/{cfg.seed}/{split}/{i}")
        image, question, answer, reason, caption = MAKERS[qtype](rng, cfg)
        items.append(VQAItem(f"vqa-{split}-{cfg.seed}-{i:05d}", qtype, question, answer, reason, caption, image))
    return items


def to_example(item: VQAItem, image_rel: str) -> dict:
    """The distillation-format record of ``item`` (prompt built with ``memlora.runtime.prompts.vqa_messages``)."""

    return {
        "id": item.id,
        "stage": "vqa",
        "messages": vqa_messages(item.question),
        "target": item.target(),
        "source": SOURCE,
        "images": [image_rel],
        "meta": {"qtype": item.qtype, "answer": item.answer, "caption": item.caption, "question": item.question},
    }


def write_vqa_benchmark(data_dir: str | Path, cfg: VQABenchmarkConfig | None = None) -> dict[str, int]:
    """Write every split's images and ``<split>/vqa.jsonl`` under ``data_dir``; returns examples per split."""

    cfg = cfg or VQABenchmarkConfig()
    data_dir = Path(data_dir)
    counts = {}
    for split in ("train", "val", "test"):
        n = getattr(cfg, split)
        rows = []
        image_dir = data_dir / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        for item in generate_split(split, n, cfg):
            rel = f"images/{split}/{item.id}.png"
            item.image.save(data_dir / rel, format="PNG", optimize=False)
            rows.append(to_example(item, rel))
        counts[split] = write_jsonl_atomic(stage_path(data_dir, split, "vqa"), rows)
    return counts


def resolve_images(examples: Sequence[dict], data_dir: str | Path) -> list[dict]:
    """Examples with relative ``images`` made absolute against ``data_dir``; a missing file is a ``DataError``."""
    data_dir = Path(data_dir)
    out = []
    for ex in examples:
        paths = []
        for p in ex.get("images") or []:
            path = Path(p) if Path(p).is_absolute() else data_dir / p
            if not path.is_file():
                raise DataError(f"example {ex.get('id')!r}: image {p} not found (relative paths are read from {data_dir})")
            paths.append(str(path))
        out.append({**ex, "images": paths})
    return out


def majority_baseline(train: Sequence[dict], test: Sequence[dict]) -> dict[str, float]:
    """V of always answering each question type's most frequent train answer, per type and overall."""
    by_type: dict[str, Counter] = {}
    for ex in train:
        by_type.setdefault(ex["meta"]["qtype"], Counter())[ex["meta"]["answer"].lower()] += 1
    hits: dict[str, list[int]] = {}
    for ex in test:
        qtype = ex["meta"]["qtype"]
        guess = by_type[qtype].most_common(1)[0][0] if qtype in by_type else ""
        hits.setdefault(qtype, []).append(int(guess == ex["meta"]["answer"].lower()))
    result = {t: sum(h) / len(h) for t, h in hits.items()}
    every = [x for h in hits.values() for x in h]
    result["all"] = sum(every) / len(every) if every else 0.0
    return result
