"""The host's CPU as it matters for int8 speed: model name and the instruction-set features
that decide whether integer kernels beat float ones (x86: AVX2, AVX-512, VNNI, AMX; ARM:
the dot-product extension). Latency figures are only meaningful together with these."""
from __future__ import annotations

import os
import platform
from typing import Dict, List

# /proc/cpuinfo flag -> the name reports use
X86_FEATURES = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512F", "avx512bw": "AVX-512BW",
                "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8"}
ARM_FEATURES = {"asimddp": "dot-product (asimddp)", "i8mm": "int8 matrix multiply (i8mm)", "sve": "SVE"}
INT8_ACCELERATING = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> Dict[str, object]:
    """{'model', 'machine', 'cores', 'features': [...], 'int8_dot_product': bool}."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and model in ("unknown", "", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags |= set(value.split())
    except OSError:
        pass
    known = {**X86_FEATURES, **ARM_FEATURES}
    features: List[str] = [name for flag, name in known.items() if flag in flags]
    return {"model": model, "machine": platform.machine(), "cores": os.cpu_count(), "features": features,
            "int8_dot_product": any(flag in flags for flag in INT8_ACCELERATING)}


def describe(info: Dict[str, object]) -> str:
    features = ", ".join(info["features"]) or "none of the int8-relevant features"
    note = "" if info["int8_dot_product"] else "; no int8 dot-product instructions (VNNI/AMX/dotprod)"
    return f"{info['model']} ({info['machine']}, {info['cores']} cores; {features}{note})"
