"""``memlora.runtime.cpu``: the CPU a measurement ran on, read from /proc/cpuinfo (x86 and ARM layouts)."""

from __future__ import annotations

import pytest

from memlora.runtime.cpu import ISA_FLAGS, cpu_info, parse_cpuinfo

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 avx_vnni

processor\t: 1
model name\t: other
flags\t\t: fpu
"""
AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse4_1 sse4_2 fma avx sse4a avx2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm asimddp i8mm bf16 sve
CPU implementer\t: 0x41
Hardware\t: Qualcomm Technologies, Inc SM8550
"""


@pytest.mark.parametrize("text, model, isa", [
    (INTEL, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
     ["sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]),
    (AMD, "AMD EPYC", ["sse4_2", "avx", "avx2", "fma"]),
    (ARM, "Qualcomm Technologies, Inc SM8550", ["asimd", "asimddp", "i8mm", "bf16", "sve"]),
    ("", None, []),
])
def test_parse_cpuinfo_reads_the_first_processors_model_and_kernel_flags(text, model, isa):
    assert parse_cpuinfo(text) == {"model": model, "isa": isa}


def test_cpu_info_describes_this_machine():
    info = cpu_info()
    assert info["model"] and info["machine"]
    assert set(info["isa"]) <= set(ISA_FLAGS)
