"""The paper's VQA teacher protocol (appendix C.1) as a command: a VLM behind an OpenAI-compatible endpoint writes one
question/answer/reason triple per (image, instruction type) for a folder of the user's images.

The prompt is the paper's instruction prompt with its one-shot example, verbatim, followed by one of the chosen
instruction types 2, 3 and 4 (the three that the InternVL3-2B validator failed most). The image goes as a base64 data URL
(``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``). Replies are parsed tolerantly; a reply
without a question or with an answer longer than one word is kept only in the raw log. Clean examples are written in the
distillation format (stage "vqa", the student's ``vqa_messages`` prompt, target ``{"answer", "reason"}``); each image is
assigned to train/val/test by its sha256, so an image never lands in two splits (the paper removes such images).

    memlora-train vqa-teacher --endpoint http://localhost:8000/v1 --model OpenGVLab/InternVL3-78B --images photos/ -o DATA/
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from memlora.corpus.dataset import stage_path, write_jsonl_atomic
from memlora.errors import DataError, ImageError
from memlora.runtime.images import check_image
from memlora.runtime.parsing import clean_output, find_json
from memlora.runtime.prompts import vqa_messages

INSTRUCTION_PROMPT = (
    "I am creating a challenging VQA benchmark, where I associate each image to an ambiguous question, which requires only "
    "a one-word answer. Questions should be ambiguous, difficult, and not open to interpretation: an answer to the question "
    "should be indisputably correct or wrong. For example, a question could be \"Is the man on the right holding a glass "
    "with the left hand?\" while the truth is that he is holding the glass with the right hand.\n"
    "The question should be written in a way that one word is enough to reply.\n"
    "Following the Instruction below, generate a question-answer pair with json format as in {\"question\": \"Is the man on "
    "the right is holding a glass with the left hand?\", \"answer\": \"No\", \"reason\": \"The man is holding the glass with "
    "the right hand\"}\n"
    "Instruction:\n"
)
"""Appendix C.1's instruction prompt and one-shot example, word for word (line breaks as printed)."""

INSTRUCTION_TYPES = {
    1: "Generate a question about the details of an object in the image",
    2: "Generate a question about the details of an unusual object in the image",
    3: "Generate a question about the color of a small portion of the image",
    4: "Generate a question about a countable object quantity in the image",
    5: "Generate a question about an unusual countable object quantity in the image",
    6: "Generate a question about the vibe of the image",
    7: "Generate a question about the artistic style of the image",
    8: "Generate a question about the presence or not of an unusual object",
}
"""The eight instruction types the paper tested (C.1)."""
CHOSEN_TYPES = (2, 3, 4)
"""The three hardest for the validator, used to build the benchmark."""
QTYPE_NAMES = {2: "unusual", 3: "colour", 4: "count"}
IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
                  ".bmp": "image/bmp"}


@dataclass
class VQATeacherConfig:
    """How the teacher run is split and which instruction types it asks."""

    types: tuple[int, ...] = CHOSEN_TYPES
    """Instruction types (C.1 numbering) asked for every image."""
    val_fraction: float = 0.1
    """Share of images assigned to val (by sha256)."""
    test_fraction: float = 0.1
    """Share of images assigned to test (by sha256)."""


def teacher_messages(image_path: Path, instruction_type: int) -> list[dict]:
    """The chat request of one (image, instruction type): prompt text + the image as a base64 data URL."""
    mime = IMAGE_SUFFIXES.get(image_path.suffix.lower())
    if mime is None:
        raise ImageError(f"{image_path}: not an image file type the teacher request supports ({', '.join(IMAGE_SUFFIXES)})")
    data = base64.b64encode(image_path.read_bytes()).decode("ascii")
    return [{"role": "user", "content": [
        {"type": "text", "text": INSTRUCTION_PROMPT + INSTRUCTION_TYPES[instruction_type]},
        {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}},
    ]}]


def parse_triple(text: str) -> tuple[dict | None, str]:
    """``({"question", "answer", "reason"}, "")`` from a teacher reply, or ``(None, why)``."""

    payload = find_json(clean_output(text or ""), lambda obj: isinstance(obj, dict) and "question" in obj)
    if not isinstance(payload, dict):
        return None, "no JSON object with a question"
    lowered = {str(k).lower(): v for k, v in payload.items()}
    question, answer, reason = lowered.get("question"), lowered.get("answer"), lowered.get("reason", "")
    if not isinstance(question, str) or not question.strip():
        return None, "empty question"
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        return None, "empty answer"
    answer = answer.strip().strip(".!?\"'")
    if len(answer.split()) != 1:
        return None, f"answer {answer!r} is not one word"
    return {"question": question.strip(), "answer": answer, "reason": reason.strip() if isinstance(reason, str) else ""}, ""


def split_of(digest: str, config: VQATeacherConfig) -> str:
    """train/val/test from the image's sha256 (stable: the same image always lands in the same split)."""
    x = int(digest[:8], 16) / 0x100000000
    if x < config.test_fraction:
        return "test"
    if x < config.test_fraction + config.val_fraction:
        return "val"
    return "train"


def run_vqa_teacher(teacher, images_dir: str | Path, data_dir: str | Path, config: VQATeacherConfig | None = None,
                    progress: bool = True) -> dict[str, int]:
    """Ask ``teacher`` (``chat(messages) -> TeacherReply``) for every image x type; write DATA/<split>/vqa(.raw).jsonl."""
    from tqdm.auto import tqdm


    config = config or VQATeacherConfig()
    bad_types = [t for t in config.types if t not in INSTRUCTION_TYPES]
    if bad_types:
        raise DataError(f"unknown instruction type(s) {bad_types}: the paper's types are 1..8")
    images_dir, data_dir = Path(images_dir), Path(data_dir)
    files = sorted(p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) if images_dir.is_dir() else []
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {images_dir}")
    clean: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    raw: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for path in tqdm(files, desc="vqa teacher", disable=not progress):
        try:
            checked = check_image(path)
        except ImageError as exc:
            raw["train"].append({"image": str(path), "error": str(exc)})
            continue
        digest = checked.sha256
        split = split_of(digest, config)
        rel = f"images/{split}/{digest}.{checked.ref.rsplit('.', 1)[1]}"
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, data_dir / rel)
        for qtype in config.types:
            reply = teacher.chat(teacher_messages(path, qtype))
            triple, why = parse_triple(reply.text)
            record_id = f"vqa-{digest[:16]}-t{qtype}"
            raw[split].append({"id": record_id, "image": rel, "type": qtype, "text": reply.text, "rejected": why or None,
                               "teacher": teacher.name})
            if triple is None:
                continue
            clean[split].append({
                "id": record_id, "stage": "vqa", "messages": vqa_messages(triple["question"]),
                "target": json.dumps({"answer": triple["answer"], "reason": triple["reason"]}, ensure_ascii=False),
                "source": f"teacher:{teacher.name}", "images": [rel],
                "meta": {"qtype": QTYPE_NAMES.get(qtype, str(qtype)), "instruction_type": qtype, "answer": triple["answer"],
                         "question": triple["question"], "source_file": path.name},
            })
    counts = {}
    for split in clean:
        counts[split] = write_jsonl_atomic(stage_path(data_dir, split, "vqa"), clean[split])
        write_jsonl_atomic(stage_path(data_dir, split, "vqa", raw=True), raw[split])
    return counts
