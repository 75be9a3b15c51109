"""Images kept in memory: validation, content-addressed files, and the memory loop with image turns.

Bad images (empty, not an image, truncated PNG/JPEG, over the byte or pixel limit, missing file) raise ``ImageError``
with the reason and write nothing; in ``Memory.add`` they become rejections while the turn's text memories are still
extracted and stored (the text stages use a scripted engine: the point here is the image path through the REAL store).
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from memlora.errors import ImageError
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.runtime.images import ImageLimits, ImageStore, check_image
from memlora.runtime.memory import Memory, MemoryConfig
from memlora.runtime.store import MemoryStore

from helpers import ScriptedEngine, add_every_fact


def png_bytes(colour=(200, 10, 10), size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


BAD_IMAGES = {
    "empty": (b"", ImageLimits(), "empty"),
    "not an image": (b"hello, this is text", ImageLimits(), "not a readable image"),
    "truncated png": (png_bytes(size=(64, 64))[:-40], ImageLimits(), "truncated or corrupt"),
    "truncated jpeg": (jpeg_bytes()[:-300], ImageLimits(), "truncated or corrupt"),
    "too many bytes": (png_bytes(), ImageLimits(max_bytes=50), "over the limit of 50"),
    "too many pixels": (png_bytes(size=(100, 100)), ImageLimits(max_pixels=5000), "10,000 pixels, over the limit"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_are_refused_with_the_reason(name, tmp_path):
    data, limits, message = BAD_IMAGES[name]
    store = ImageStore(tmp_path, limits)
    with pytest.raises(ImageError, match=message):
        store.put(data)
    assert store.refs() == [] and not (tmp_path / "images").exists()


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        check_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="file path, bytes or a PIL image"):
        check_image(12345)


@pytest.mark.parametrize("source", ["bytes", "path", "pil"])
def test_images_are_content_addressed_and_stored_once(source, tmp_path):
    data = png_bytes()
    path = tmp_path / "in.png"
    path.write_bytes(data)
    given = {"bytes": data, "path": path, "pil": Image.open(io.BytesIO(data))}[source]
    store = ImageStore(tmp_path / "mem")
    ref = store.put(given)
    again = store.put(given)
    stored = (tmp_path / "mem" / ref).read_bytes()
    digest = hashlib.sha256(stored).hexdigest()
    assert ref == again == f"images/{digest[:2]}/{digest}.png"
    if source != "pil":  # a PIL image is encoded as PNG; files and bytes are kept byte for byte
        assert stored == data
    assert store.refs() == [ref]
    assert store.open(ref).getpixel((0, 0)) == (200, 10, 10)


def test_tampered_or_malformed_refs_are_refused(tmp_path):
    store = ImageStore(tmp_path)
    ref = store.put(png_bytes())
    (tmp_path / ref).write_bytes(png_bytes(colour=(0, 0, 255)))
    with pytest.raises(ImageError, match="modified on disk"):
        store.open(ref)
    for bad in ("../etc/passwd", "images/ab/xyz.png", f"images/00/{'0' * 64}.png"):
        with pytest.raises(ImageError):
            store.open(bad)


# ------------------------------------------------------------------------------------------------ the loop with images
@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder(threads=1)


def text_stages_engine(facts) -> ScriptedEngine:
    """Extraction always finds ``facts``; the update stage ADDs each new fact (a model reading its prompt)."""
    return ScriptedEngine(("extraction", "update"), reply=lambda messages, adapter: (
        json.dumps({"facts": facts}) if adapter == "extraction" else add_every_fact(messages)))


def make_memory(tmp_path, embedder, facts, **config):
    store = MemoryStore(tmp_path / "mem", dim=embedder.dim)
    return Memory(text_stages_engine(facts), embedder, store, MemoryConfig(store_dir=str(tmp_path / "mem"), **config))


def test_good_image_is_kept_and_referenced_by_the_turns_memories(tmp_path, embedder):
    memory = make_memory(tmp_path, embedder, ["Ana adopted a cat named Miso"])
    turn = [{"role": "user", "content": "Ana: look at my new cat!", "image": png_bytes()}]
    result = memory.add(turn, user_id="ana")
    (record,) = memory.get_all("ana")
    assert result.image_refs and record.image_refs == result.image_refs
    assert (tmp_path / "mem" / record.image_refs[0]).is_file()
    memory.close()
    reopened = make_memory(tmp_path, embedder, [])  # refs survive a restart, files are found again
    assert reopened.images.has(reopened.get_all("ana")[0].image_refs[0])


def test_bad_image_loses_nothing_else_of_the_turn(tmp_path, embedder):
    memory = make_memory(tmp_path, embedder, ["Ana visited Lisbon in May"])
    good, bad = png_bytes(), png_bytes(size=(64, 64))[:-40]
    result = memory.add([{"role": "user", "content": "Ana: Lisbon was great", "images": [bad, good]}], user_id="ana")
    (record,) = memory.get_all("ana")
    assert record.text == "Ana visited Lisbon in May"
    assert record.image_refs == result.image_refs and len(record.image_refs) == 1
    assert [r.reason.split(":")[0] for r in result.rejected] == ["image"] and "truncated" in result.rejected[0].reason
    assert memory.images.refs() == record.image_refs  # nothing of the bad image on disk


def test_on_bad_image_raise_writes_nothing(tmp_path, embedder):
    memory = make_memory(tmp_path, embedder, ["Ana likes tea"], on_bad_image="raise")
    with pytest.raises(ImageError, match="not a readable image"):
        memory.add("Ana: tea time", user_id="ana", images=[png_bytes(), b"garbage"])
    assert memory.get_all("ana") == [] and memory.images.refs() == []


def test_image_turn_without_facts_still_keeps_the_image(tmp_path, embedder):
    memory = make_memory(tmp_path, embedder, [])
    result = memory.add("Bo: here is the view", user_id="bo", images=[png_bytes()])
    (record,) = memory.get_all("bo")
    assert record.text == "Shared an image: Bo: here is the view" and record.image_refs == result.image_refs


def test_caption_mode_turns_the_image_into_its_caption(tmp_path, embedder):
    seen = []
    memory = make_memory(tmp_path, embedder, ["Ana has a red bike"], image_mode="caption")
    original = memory.engine.generate
    memory.engine.generate = lambda messages, **kw: (seen.append(messages), original(messages, **kw))[1]
    turn = [{"role": "user", "content": "Ana: my bike", "image": png_bytes(), "caption": "a red bicycle by a wall"}]
    result = memory.add(turn, user_id="ana")
    assert "Ana: my bike [image: a red bicycle by a wall]" in seen[0][-1]["content"]
    assert result.image_refs == [] and memory.images.refs() == []
    assert memory.get_all("ana")[0].image_refs == []
