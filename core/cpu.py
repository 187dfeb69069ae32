"""Which GGUF quantization this CPU should run fastest, from its instruction set, and whether
``backend="auto"`` should take an ONNX int8 pack (:func:`prefers_onnx`).

llama.cpp's q8_0 matrix products multiply int8 by int8. CPUs with int8 dot-product
instructions — x86 AVX-512 VNNI or AVX-VNNI, ARM's dot product extension (``asimddp``, the
``dotprod`` feature) — do that in one instruction per 4 pairs, and q8_0 is expected to run
ahead of f16. On an AVX2-only CPU the int8 products take several instructions each and f16
(converted to float32 with F16C) is faster than q8_0 (measured: 1.13-1.29x).

The flags are a first guess, not a measurement: on one AVX-512 VNNI box f16 ran 1.10x q8_0
for all-MiniLM-L6-v2 (llama.cpp's f16 matrix kernels are fast there too). ``lokal models pack``
prints :func:`advice`; ``lokal bench -b gguf -q q8_0 -q f16`` measures both and says when the
measurement overrides it. The measured ratios are in docs/benchmarks.md. A GGUF runs on any
CPU; only its speed depends on the choice, so a box whose CPU differs from the packing
machine's is best served by shipping both files (each a variant of the same model) and
running ``lokal bench`` there.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

#: CPU flags (as /proc/cpuinfo spells them) that give int8 dot products, and what they are.
INT8_DOT_FLAGS = {
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "asimddp": "ARM dot product",
}


@dataclass(frozen=True)
class Advice:
    """The quantization to pack for this CPU, and why."""

    quantization: str
    reason: str
    cpu: str

    def __str__(self) -> str:
        return (
            f"{self.quantization} should run fastest on this CPU ({self.cpu}): {self.reason} "
            "(lokal bench -b gguf -q q8_0 -q f16 measures it)"
        )


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo: x86 ``flags``, ARM ``Features``); on
    other systems the flags known from the platform (Apple silicon has ARM dot products)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not cpuinfo and platform.system() == "Darwin" and platform.machine() == "arm64":
        flags.add("asimddp")
    return flags


def cpu_name(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "cpu model", "hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def advice(flags: set[str] | None = None, name: str | None = None) -> Advice:
    """q8_0 where the CPU has int8 dot products, else f16."""
    flags = cpu_flags() if flags is None else flags
    name = cpu_name() if name is None else name
    found = [label for flag, label in INT8_DOT_FLAGS.items() if flag in flags]
    if found:
        return Advice("q8_0", f"it has int8 dot products ({', '.join(found)})", name)
    if "avx2" in flags:
        return Advice("f16", "AVX2 without int8 dot products (VNNI): f16 outruns q8_0 there", name)
    return Advice("q8_0", "no AVX2 or int8 dot products found: q8_0 reads the least", name)


def prefers_onnx(flags: set[str] | None = None) -> bool:
    """Whether ``backend="auto"`` takes an ONNX int8 pack over a GGUF: on CPUs with int8 dot
    products, where ONNX Runtime's int8 kernels measured 2.6-3.7x llama.cpp's q8_0 on
    all-MiniLM-L6-v2 (AVX-512 VNNI; docs/benchmarks.md, benchmarks/embed_throughput.py). Without
    them lokal has no measurement, so a GGUF it is (or a pack named with ``backend="onnx"``;
    ``lokal bench -b gguf -b onnx`` says which runs faster there)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in INT8_DOT_FLAGS)
