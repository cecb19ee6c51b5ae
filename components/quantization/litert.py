"""Google's LiteRT Quantizer (PyPI `ai-edge-quantizer`) as a variant backend: one of its
recipes applied to the variant's float32 .tflite (variants.LITERT_QUANTIZER; the int4 and
blockwise-int4 weight variants). The benchmark's comparison with our int8 variants calls
the same function.

Source: https://github.com/google-ai-edge/ai-edge-quantizer (recipe.py names the recipes:
dynamic_wi4_afp32 = 4-bit weights per output channel, float activations quantized at run
time; dynamic_wi4b32_afp32 = 4-bit weights with one scale per block of 32 input values).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import numpy as np

from tfx_quantization.quantization.variants import VariantRecipe

SIGNATURE = "serving_default"
INSTALL = "pip install ai-edge-quantizer==0.10.0 (constraints.txt pins it)"


def apply(float_tflite: bytes, recipe_name: str,
          samples: Optional[Callable[[], Iterable[Dict[str, np.ndarray]]]] = None,
          signature: str = SIGNATURE) -> bytes:
    """`float_tflite` (a float32 .tflite) quantized with the LiteRT Quantizer recipe
    `recipe_name` (a function of ai_edge_quantizer.recipe); `samples()` yields the calibration
    sample ({input name: [1, ...]}) for the recipes that need it (static ones: read only then).
    Raises ValueError for an unknown recipe
    or a recipe that needs calibration without samples, ImportError (with the install line)
    when ai-edge-quantizer is missing."""
    try:
        import numpy.typing  # noqa: F401  (ai-edge-quantizer needs it imported first with numpy 1.26)
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as e:
        raise ImportError(f"ai-edge-quantizer is not installed ({e}): {INSTALL}") from None
    make = getattr(recipe, recipe_name, None)
    if not callable(make):
        raise ValueError(f"LiteRT Quantizer has no recipe {recipe_name!r}: see ai_edge_quantizer.recipe")
    qt = quantizer.Quantizer(bytes(float_tflite))
    qt.load_quantization_recipe(make())
    calibration_result = None
    if qt.need_calibration:
        listed = list(samples()) if samples is not None else []
        if not listed:
            raise ValueError(f"LiteRT Quantizer recipe {recipe_name} needs calibration data: pass the samples")
        calibration_result = qt.calibrate({signature: listed}, num_threads=1)
    result = qt.quantize(calibration_result, enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


def quantize(recipe: VariantRecipe, float_tflite: bytes, calibration: Optional[Callable[[], Iterable]] = None,
             signature: str = SIGNATURE) -> bytes:
    """The variant of `recipe` (backend LITERT_QUANTIZER) from its float32 conversion."""
    return apply(float_tflite, recipe.litert_recipe, calibration, signature)
