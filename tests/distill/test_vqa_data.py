"""The procedural VQA benchmark and the paper's VQA teacher protocol.

- Answers are checked from the PIXELS, independently of the generator: the small corner square's colour is sampled, and
  shapes are counted / classified by connected components and how much of their bounding box they fill.
- Same seed -> same bytes; splits differ; the files are in the distillation format the trainer loads.
- ``vqa-teacher`` against a real loopback HTTP server that speaks the OpenAI chat API: the exact C.1 prompt + base64 image
  arrive, replies are parsed, one-word answers kept, others only in the raw log.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from memlora.corpus.dataset import load_examples, stage_path
from memlora.corpus.vqa_data import (
    BACKGROUND,
    COLOURS,
    CORNERS,
    VQABenchmarkConfig,
    generate_split,
    majority_baseline,
    write_vqa_benchmark,
)
from memlora.distill.vqa_teacher import INSTRUCTION_PROMPT, INSTRUCTION_TYPES, parse_triple, run_vqa_teacher
from memlora.errors import DataError
from memlora.runtime.parsing import parse_vqa
from memlora.runtime.prompts import vqa_messages

CFG = VQABenchmarkConfig(train=24, val=6, test=9, seed=3)


def components(image) -> list[dict]:
    """Connected non-background regions (4-neighbour flood fill): pixel count and bounding-box fill ratio."""
    a = np.asarray(image)
    fg = np.any(np.abs(a.astype(int) - np.array(BACKGROUND)) > 30, axis=2)
    seen = np.zeros_like(fg)
    out = []
    for y0, x0 in zip(*np.nonzero(fg)):
        if seen[y0, x0]:
            continue
        stack, pixels = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < fg.shape[0] and 0 <= nx < fg.shape[1] and fg[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        ys, xs = zip(*pixels)
        box = (max(ys) - min(ys) + 1) * (max(xs) - min(xs) + 1)
        out.append({"n": len(pixels), "fill": len(pixels) / box})
    return out


def shape_of(fill: float) -> str:
    """square ~1.0, circle ~0.79, triangle ~0.5, star ~0.39 of their bounding box."""
    return "square" if fill > 0.92 else "circle" if fill > 0.65 else "triangle" if fill > 0.45 else "star"


@pytest.fixture(scope="module")
def items():
    return generate_split("test", 60, VQABenchmarkConfig(test=60, seed=5))


def test_colour_answers_match_the_pixels(items):
    checked = 0
    for item in (i for i in items if i.qtype == "colour"):
        corner = next(c for c in CORNERS if f"the {c} corner" in item.question)
        cx, cy = CORNERS[corner]
        side = item.image.size[0]
        x = 8 if cx == 0 else side - 9
        y = 8 if cy == 0 else side - 9
        assert item.image.getpixel((x, y)) == COLOURS[item.answer], item.question
        checked += 1
    assert checked == 20


def test_count_and_unusual_answers_match_the_pixels(items):
    counted = odd = 0
    for item in items:
        shapes = [shape_of(c["fill"]) for c in components(item.image)]
        if item.qtype == "count":
            shape = item.question.split("How many ")[1].split("s are")[0]
            assert str(shapes.count(shape)) == item.answer, (item.question, shapes)
            counted += 1
        elif item.qtype == "unusual":
            rare = [s for s in set(shapes) if shapes.count(s) == 1]
            assert rare == [item.answer], shapes
            odd += 1
    assert counted == 20 and odd == 20


def test_same_seed_same_bytes_and_splits_differ():
    def png(item):
        buf = io.BytesIO()
        item.image.save(buf, format="PNG")
        return buf.getvalue()

    a, b = generate_split("train", 9, CFG), generate_split("train", 9, CFG)
    assert [png(x) for x in a] == [png(x) for x in b]
    assert [(x.question, x.answer) for x in a] == [(x.question, x.answer) for x in b]
    other = generate_split("val", 9, CFG)
    assert [png(x) for x in other] != [png(x) for x in a]
    assert {x.id for x in other}.isdisjoint({x.id for x in a})


def test_written_benchmark_is_in_the_distillation_format(tmp_path):
    counts = write_vqa_benchmark(tmp_path, CFG)
    assert counts == {"train": 24, "val": 6, "test": 9}
    train = load_examples(stage_path(tmp_path, "train", "vqa"))
    for ex in train:
        assert ex["stage"] == "vqa" and ex["source"] == "procedural"
        assert ex["messages"] == vqa_messages(ex["meta"]["question"])
        parsed = parse_vqa(ex["target"])
        assert parsed.ok and parsed.value.answer == ex["meta"]["answer"] and len(parsed.value.answer.split()) == 1
        assert Path(ex["images"][0]).is_absolute() and Path(ex["images"][0]).is_file()  # relative to DATA, resolved on load
    raw_line = json.loads(stage_path(tmp_path, "train", "vqa").read_text().splitlines()[0])
    assert raw_line["images"][0].startswith("images/train/")


@pytest.mark.parametrize(
    "train, test, expected",
    [
        ([("colour", "red"), ("colour", "red"), ("colour", "blue")], [("colour", "red"), ("colour", "blue")], {"colour": 0.5, "all": 0.5}),
        ([("count", "3"), ("colour", "blue")], [("count", "3"), ("colour", "red"), ("colour", "blue")],
         {"count": 1.0, "colour": 0.5, "all": 2 / 3}),
    ],
)
def test_majority_baseline(train, test, expected):
    mk = lambda rows: [{"meta": {"qtype": q, "answer": a}} for q, a in rows]  # noqa: E731
    assert majority_baseline(mk(train), mk(test)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"question": "What colour is the cup?", "answer": "Red", "reason": "It is red."}', "Red"),
        ('Sure! ```json\n{"question": "How many dogs?", "answer": 2, "reason": "two dogs"}\n```', "2"),
        ('{"question": "Which hand?", "answer": "the left one", "reason": ""}', None),
        ("I cannot see the image.", None),
    ],
)
def test_parse_teacher_triples(reply, expected):
    triple, why = parse_triple(reply)
    assert (triple["answer"] if triple else None) == expected
    assert bool(why) == (expected is None)


class _FakeVLMServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions that checks the request and answers per instruction type."""

    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        text_item, image_item = body["messages"][0]["content"]
        prompt = text_item["text"]
        kind = next(k for k, v in INSTRUCTION_TYPES.items() if prompt.endswith(v))
        reply = {
            2: '{"question": "What is the odd object?", "answer": "star", "reason": "one star among circles"}',
            3: '{"question": "What colour is the corner?", "answer": "blue", "reason": "the corner is blue"}',
            4: 'Here: {"question": "How many circles?", "answer": "three circles", "reason": "too long"}',
        }[kind]
        data = json.dumps({"choices": [{"message": {"content": reply}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_vqa_teacher_against_a_loopback_server(tmp_path):
    from memlora.distill.teacher import OpenAIChatTeacher

    images = tmp_path / "photos"
    images.mkdir()
    for item in generate_split("train", 4, CFG):
        item.image.save(images / f"{item.id}.png")
    (images / "notes.txt").write_text("not an image")
    server = HTTPServer(("127.0.0.1", 0), _FakeVLMServer)
    _FakeVLMServer.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    teacher = OpenAIChatTeacher(f"http://127.0.0.1:{server.server_port}/v1", "fake-vlm", max_retries=0, transport="urllib")
    try:
        counts = run_vqa_teacher(teacher, images, tmp_path / "DATA", progress=False)
    finally:
        teacher.close()
        server.shutdown()
    assert len(_FakeVLMServer.requests) == 4 * 3
    first = _FakeVLMServer.requests[0]
    assert first["model"] == "fake-vlm" and first["temperature"] == 0.0
    text, image = first["messages"][0]["content"]
    assert text["text"] == INSTRUCTION_PROMPT + INSTRUCTION_TYPES[2]
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(counts.values()) == 4 * 2  # the type-4 reply is not one word: raw log only
    rows = [ex for split in ("train", "val", "test") for ex in load_examples(stage_path(tmp_path / "DATA", split, "vqa"))]
    assert {json.loads(ex["target"])["answer"] for ex in rows} == {"star", "blue"}
    raw = [json.loads(line) for split in ("train", "val", "test")
           for line in stage_path(tmp_path / "DATA", split, "vqa", raw=True).read_text().splitlines()]
    assert sum(1 for r in raw if r.get("rejected")) == 4


def test_vqa_teacher_refuses_an_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no images"):
        run_vqa_teacher(object(), tmp_path, tmp_path / "DATA", progress=False)
