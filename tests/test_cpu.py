"""Which quantization a CPU runs fastest: from the flags /proc/cpuinfo lists."""

from __future__ import annotations

import pytest

from lokal import cpu
from lokal.benchmark import quantization_findings

EPYC = "model name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 f16c avx512f avx512_vnni\n"
HASWELL = "model name\t: Intel(R) Xeon(R) CPU E5-2680 v3\nflags\t\t: fpu avx avx2 fma f16c\n"
ALDER = "model name\t: 12th Gen Intel(R) Core(TM) i5-1235U\nflags\t\t: avx2 avx_vnni\n"
GRAVITON = (
    "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimddp\nCPU part\t: 0xd0c\n"
)
OLD_ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"


@pytest.mark.parametrize(
    ("cpuinfo", "quantization", "why"),
    [
        (EPYC, "q8_0", "AVX-512 VNNI"),
        (ALDER, "q8_0", "AVX-VNNI"),
        (GRAVITON, "q8_0", "ARM dot product"),
        (HASWELL, "f16", "AVX2 without int8 dot products"),
        (OLD_ARM, "q8_0", "no AVX2 or int8 dot products"),
    ],
)
def test_advice_follows_the_cpu_flags(cpuinfo: str, quantization: str, why: str) -> None:
    advice = cpu.advice(cpu.cpu_flags(cpuinfo), cpu.cpu_name(cpuinfo))
    assert advice.quantization == quantization
    assert why in advice.reason
    assert str(advice).startswith(f"{quantization} should run fastest on this CPU")


def test_cpu_name_and_flags_are_read() -> None:
    assert cpu.cpu_name(EPYC) == "AMD EPYC 9R14"
    assert {"avx2", "avx512_vnni"} <= cpu.cpu_flags(EPYC)
    assert "asimddp" in cpu.cpu_flags(GRAVITON)


def test_bench_says_which_quantization_ran_faster_and_by_how_much() -> None:
    results = [
        {
            "model": "all-MiniLM-L6-v2",
            "backend": "gguf",
            "quantization": "q8_0",
            "tokens_per_s": 3000.0,
        },
        {
            "model": "all-MiniLM-L6-v2",
            "backend": "gguf",
            "quantization": "f16",
            "tokens_per_s": 2400.0,
        },
        {
            "model": "all-MiniLM-L6-v2",
            "backend": "sentence-transformers",
            "quantization": "f32",
            "tokens_per_s": 2000.0,
        },
    ]
    vnni = cpu.advice(cpu.cpu_flags(EPYC), cpu.cpu_name(EPYC))
    haswell = cpu.advice(cpu.cpu_flags(HASWELL), cpu.cpu_name(HASWELL))
    lines = quantization_findings(results, vnni)
    assert lines[0] == str(vnni)
    assert lines[1] == (
        "measured: all-MiniLM-L6-v2 q8_0 3,000 tokens/s, f16 2,400: q8_0 1.25x "
        "(as the instruction set suggests)"
    )
    # a measurement against the flags' guess wins, and says so
    assert quantization_findings(results, haswell)[1].endswith(
        "(not what the instruction set suggests: pack q8_0 for this box)"
    )
    results[1]["tokens_per_s"] = 2950.0
    assert quantization_findings(results, haswell)[1].endswith(
        "1.02x (within a run's spread: either will do)"
    )
    assert quantization_findings(results[:1]) == [str(cpu.advice())]  # one quantization: no ratio
