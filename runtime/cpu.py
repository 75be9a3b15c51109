"""What CPU a measurement ran on: its model name and the vector and matrix extensions its kernels can use.

ONNX Runtime's int4 kernels, llama.cpp's and torch's all pick code paths by instruction set, so speeds and even greedy
outputs differ between CPUs (measured: an Intel CPU with AVX-512 VNNI and an AMD EPYC with AVX2 only prefill SmolLM2
int4 at about 700 and 430 tokens/s, and the same bundle writes other answers on each). Every benchmark report and the
demo record carry ``cpu_info()``, so that a number says where it came from.
"""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["ISA_FLAGS", "cpu_info", "parse_cpuinfo"]

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
             "asimd", "asimddp", "i8mm", "bf16", "sve")
"""The /proc/cpuinfo flags reported (x86 ``flags``, ARM ``Features``): the ones the int4, int8 and bf16 kernels key on."""


def parse_cpuinfo(text: str) -> dict:
    """{"model": name or None, "isa": [the ``ISA_FLAGS`` present, in that order]} from /proc/cpuinfo's text (the first
    processor's entry)."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if model is None and key in ("model name", "hardware", "cpu model"):
            model = value.strip() or None
        elif not flags and key in ("flags", "features"):
            flags = set(value.split())
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def cpu_info() -> dict:
    """This machine's CPU (``parse_cpuinfo`` of /proc/cpuinfo, else the platform's processor string, no flags)."""
    try:
        info = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        info = {"model": None, "isa": []}
    info["model"] = info["model"] or platform.processor() or platform.machine() or None
    info["machine"] = platform.machine()
    return info
