"""Copy a finished bundle into an Android app's assets directory (``--android-assets DIR``).

Layout: ``DIR/memlora/`` holds ``bundle.json`` and every file the manifest lists, byte for byte, so the Android side verifies
the same checksums as ``memlora.runtime.bundle.load_bundle``. The copy is staged and renamed into place like the bundle itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from memlora.runtime.bundle import MANIFEST, load_bundle

ASSET_SUBDIR = "memlora"


def write_android_assets(bundle_dir: str | Path, assets_dir: str | Path) -> Path:
    """Copy the manifest-listed files of ``bundle_dir`` into ``assets_dir/memlora``; returns that directory."""
    bundle = load_bundle(bundle_dir, verify=True)
    assets_dir = Path(assets_dir)
    assets_dir.mkdir(parents=True, exist_ok=True)
    target = assets_dir / ASSET_SUBDIR
    staging = Path(tempfile.mkdtemp(prefix=f".{ASSET_SUBDIR}.tmp-", dir=assets_dir))
    try:
        for rel in [MANIFEST, *bundle.files]:
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle.root / rel, dest)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
