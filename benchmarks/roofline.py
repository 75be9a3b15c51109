"""The memory-bandwidth roofline of decoding: a decode step must read every weight once, so

    roofline tok/s = measured read bandwidth / bytes read per generated token

Bandwidth is measured here, on this machine, with a numpy streaming read (a sum over a buffer far larger than the caches,
split over ``threads`` threads, best of a few runs). Bytes per token are the weights of the graph on disk (int4 blocks +
scales + the float parts) plus the active adapter's weights plus the KV cache of the prompt.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Bandwidth:
    """A measured streaming-read bandwidth."""

    gb_s: float
    """GB/s (1e9 bytes per second)."""
    buffer_mb: int
    threads: int


def measure_read_bandwidth(buffer_mb: int = 512, threads: int = 2, repeats: int = 5) -> Bandwidth:
    """Best-of-``repeats`` bandwidth of summing a ``buffer_mb`` float64 buffer split over ``threads`` threads."""
    import numpy as np

    n = buffer_mb * 2**20 // 8
    data = np.ones(n, dtype=np.float64)
    parts = np.array_split(data, max(1, threads))
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=np.sum, args=(part,)) for part in parts]  # numpy drops the GIL in sum
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return Bandwidth(gb_s=data.nbytes / best / 1e9, buffer_mb=buffer_mb, threads=threads)


def model_weight_bytes(model_dir: str | Path) -> int:
    """Bytes of the ONNX graph and its external data (the weights a decode step streams)."""
    model_dir = Path(model_dir)
    return sum(p.stat().st_size for p in model_dir.glob("*.onnx*") if p.is_file())


def kv_bytes_per_token(genai_config: dict, dtype_bytes: int = 4) -> int:
    """KV-cache bytes one cached token adds (keys and values of every layer)."""
    decoder = genai_config["model"]["decoder"]
    return 2 * int(decoder["num_hidden_layers"]) * int(decoder["num_key_value_heads"]) * int(decoder["head_size"]) * dtype_bytes


def roofline_tok_s(bandwidth_gb_s: float, bytes_per_token: float) -> float:
    return bandwidth_gb_s * 1e9 / bytes_per_token if bytes_per_token else 0.0
