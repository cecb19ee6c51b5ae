"""The host's CPU features, read from a real cpuinfo file, and the latency warning."""
import pytest

from tfx_quantization.quantization import host
from tfx_quantization.settings import GateSettings
from tfx_quantization.tflite_evaluator.evaluate import latency_warning

pytestmark = pytest.mark.fast

X86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338\nflags\t\t: fpu sse avx avx2 fma avx512f avx512bw avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\nCPU implementer\t: 0x41\n"
OLD = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma\n"


def _info(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return host.cpu_info(str(path))


def test_int8_relevant_features_are_read_from_cpuinfo(tmp_path):
    xeon = _info(tmp_path, X86)
    assert xeon["model"] == "Intel(R) Xeon(R) Gold 6338" and xeon["int8_dot_product"]
    assert {"AVX2", "AVX-512F", "AVX-512 VNNI"} <= set(xeon["features"])
    arm = _info(tmp_path, ARM)
    assert arm["int8_dot_product"] and "dot-product (asimddp)" in arm["features"]
    epyc = _info(tmp_path, OLD)
    assert not epyc["int8_dot_product"] and epyc["features"] == ["AVX2", "FMA"]
    assert "no int8 dot-product instructions" in host.describe(epyc)


def test_latency_based_decisions_warn_when_int8_is_slower_than_float_here(tmp_path):
    cpu = _info(tmp_path, OLD)
    figures = {"float32": {"latency_ms_median": 0.010, "integer_compute_fraction": 0.0},
               "integer_only": {"latency_ms_median": 0.014, "integer_compute_fraction": 1.0}}
    warning = latency_warning(figures, GateSettings(selection="fastest"), cpu)
    assert "integer_only, takes 0.0140 ms against float32's 0.0100 ms" in warning and "AMD EPYC" in warning
    assert latency_warning(figures, GateSettings(max_latency_ms=1.0), cpu)
    assert latency_warning(figures, GateSettings(), cpu) is None  # smallest, no latency budget
    figures["integer_only"]["latency_ms_median"] = 0.005
    assert latency_warning(figures, GateSettings(selection="fastest"), cpu) is None
