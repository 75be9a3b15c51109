"""``load_bundle`` refuses tampered, escaping or unknown-version bundles with a message that says what is wrong."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from memlora.errors import BundleError
from memlora.runtime.bundle import MANIFEST, load_bundle


@pytest.fixture()
def bundle_copy(bundles, tmp_path):
    """A private copy of the small llama bundle (multi-LoRA base + merged expert, a few MB) to damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(bundles("llama"), dst)
    return dst


def _edit_manifest(root, edit):
    manifest = json.loads((root / MANIFEST).read_text())
    edit(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest))


def test_a_flipped_byte_in_any_file_is_refused(bundle_copy):
    files = json.loads((bundle_copy / MANIFEST).read_text())["files"]
    assert len(files) >= 10
    load_bundle(bundle_copy)
    for rel in files:
        path = bundle_copy / rel
        data = bytearray(path.read_bytes())
        original = data[len(data) // 2]
        data[len(data) // 2] = original ^ 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(BundleError, match=rf"{rel}.*sha256"):
            load_bundle(bundle_copy)
        load_bundle(bundle_copy, verify=False)  # same size: only the hash can see it
        data[len(data) // 2] = original
        path.write_bytes(bytes(data))
    load_bundle(bundle_copy)


BAD_MANIFESTS = [
    ("file listed as ../x", lambda m: m["files"].__setitem__("../x", {"size": 1, "sha256": "0" * 64}), r"\.\./x.*outside the bundle"),
    ("expert file ../x", lambda m: m["experts"]["extraction"].__setitem__("file", "../x"), r"\.\./x.*outside the bundle"),
    ("nested ..", lambda m: m["experts"]["extraction"].__setitem__("file", "adapters/../../x"), r"outside the bundle"),
    ("absolute path", lambda m: m["base"].__setitem__("dir", "/etc"), r"absolute path"),
    ("unknown format version", lambda m: m.__setitem__("format_version", 99), r"unknown bundle format_version 99"),
    ("format version as string", lambda m: m.__setitem__("format_version", "1"), r"unknown bundle format_version '1'"),
    ("no format version", lambda m: m.pop("format_version"), r"unknown bundle format_version None"),
    ("unknown precision", lambda m: m["base"].__setitem__("precision", "fp8"), r"precision 'fp8'"),
    ("unknown expert mode", lambda m: m["experts"]["extraction"].__setitem__("mode", "magic"), r"mode 'magic'"),
    ("unlisted adapter file", lambda m: m["files"].pop("adapters/extraction.onnx_adapter"), r"not in the checksummed file list"),
    ("size changed", lambda m: m["files"]["model/genai_config.json"].__setitem__("size", 1), r"genai_config.json.*manifest says 1"),
    ("missing files field", lambda m: m.pop("files"), r"missing required field 'files'"),
    ("generation not an object", lambda m: m["experts"]["extraction"].__setitem__("generation", "x"), r"'generation' has the wrong type"),
    ("embedder not an object", lambda m: m.__setitem__("embedder", "embedder.onnx"), r"'embedder' has the wrong type"),
    ("rank not an integer", lambda m: m["experts"]["extraction"].__setitem__("rank", "eight"), r"'rank' has the wrong type"),
    ("expert not an object", lambda m: m["experts"].__setitem__("extraction", ["x"]), r"must be a JSON object"),
]


@pytest.mark.parametrize("case, edit, message", BAD_MANIFESTS, ids=[c[0] for c in BAD_MANIFESTS])
def test_bad_manifest_is_refused(bundle_copy, case, edit, message):
    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy, verify=False)


def test_symlink_leading_out_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "outside.onnx_adapter"
    target = bundle_copy / "adapters" / "extraction.onnx_adapter"
    shutil.copy2(target, outside)
    target.unlink()
    os.symlink(outside, target)
    with pytest.raises(BundleError, match=r"resolves outside the bundle"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "adapters" / "generation.onnx_adapter").unlink(), r"generation.onnx_adapter.*missing"),
    (lambda root: (root / "model" / "model.onnx.data").write_bytes(b"x"), r"model.onnx.data.*bytes.*truncated"),
    (lambda root: (root / MANIFEST).write_text("{not json"), r"not valid JSON"),
    (lambda root: (root / MANIFEST).unlink(), r"no bundle.json"),
], ids=["missing file", "truncated file", "malformed json", "no manifest"])
def test_damaged_bundle_is_refused(bundle_copy, damage, message):
    damage(bundle_copy)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_unlisted_files_are_ignored_and_reported(bundle_copy):
    (bundle_copy / "notes.txt").write_text("left by a user")
    assert load_bundle(bundle_copy).unlisted == ["notes.txt"]


def test_android_assets_copy_verifies(bundles, tmp_path):
    from memlora.export.android_assets import write_android_assets

    (tmp_path / "assets" / "memlora").mkdir(parents=True)
    (tmp_path / "assets" / "memlora" / "stale.txt").write_text("from an older copy")
    target = write_android_assets(bundles("llama"), tmp_path / "assets")
    copied = load_bundle(target)
    assert copied.files == load_bundle(bundles("llama")).files
    assert not (target / "stale.txt").exists() and copied.unlisted == []
