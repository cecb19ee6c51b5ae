"""Each TFLite variant described once: one VariantRecipe per variant name.

From a recipe derive the manifest's converter settings (`converter_settings`), the
converter call (convert.configure applies those settings), the selective search's
converter (the selective_integer recipe), which model it converts, whether it needs or
takes calibration data, whether its activation ranges may come from the range-method sweep,
and whether it must be integer-only. No TensorFlow import here:
the settings are names, convert.py maps them onto tf.lite.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

from tfx_quantization.contracts import (
    ALL_VARIANTS, DYNAMIC_RANGE, FLOAT16, FLOAT32, FULL_INTEGER, INT4_BLOCKWISE, INT4_WEIGHTS, INT16X8, INTEGER_ONLY,
    QAT_INT8, QAT_MIXED, SELECTIVE_INTEGER, ConverterSettings,
)

# The model a variant converts (the manifest's source_model).
FLOAT_MODEL, QAT_MODEL = "model", "qat_model"
# Calibration data: the converter cannot do without it / is given it when there is some / never.
REQUIRED, WHEN_GIVEN, NONE = "required", "when given", "none"
# Input and output types: float32 / the run's integer_io_type / integer only when the caller asks.
FLOAT_IO, INTEGER_IO, INTEGER_IO_ON_REQUEST = "float", "integer", "integer on request"
# What builds the .tflite: one TFLite converter call, the accuracy-aware search (selective.py),
# or LiteRT Quantizer (ai-edge-quantizer) applied to the float32 conversion (litert.py).
CONVERTER, SELECTIVE_SEARCH, LITERT_QUANTIZER = "tflite_converter", "selective_search", "litert_quantizer"

BUILTINS, BUILTINS_INT8 = "TFLITE_BUILTINS", "TFLITE_BUILTINS_INT8"
INT16X8_OPS = "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"
INTEGER_IO_TYPES = ("int8", "uint8")


@dataclasses.dataclass(frozen=True)
class VariantRecipe:
    """How one variant is made and what it is for.

    optimize: the converter's Optimize.DEFAULT (every variant but float32).
    supported_ops: tf.lite.OpsSet names; (BUILTINS_INT8,) makes the variant integer-only.
    supported_types: dtype names of the weights' target type (float16).
    """

    name: str
    device_class: str  # which devices it suits (also in the quantizer's README)
    source: str = FLOAT_MODEL
    calibration: str = NONE
    io: str = FLOAT_IO
    optimize: bool = True
    supported_ops: Tuple[str, ...] = (BUILTINS,)
    supported_types: Tuple[str, ...] = ()
    backend: str = CONVERTER
    # The int8-weight variants that convert from the corrected float model when the settings ask
    # for cross-layer equalization / bias correction (weight_corrections.py simulates their weights).
    weight_corrections: bool = False
    litert_recipe: str = ""  # LITERT_QUANTIZER: the ai_edge_quantizer.recipe function it applies
    # The integer type of its calibrated activations ("int8", "int16"): the activation-range sweep
    # (ranges.py) measures its methods with this type and builds the variant with the chosen ranges.
    # "" when no activation range comes from calibration (float activations, or all learned in QAT).
    activations: str = ""
    # Why a variant with calibrated activations takes no swept ranges (the manifest's sweep lists it).
    no_range_methods: str = ""

    @property
    def needs_calibration(self) -> bool:
        return self.calibration == REQUIRED

    @property
    def takes_calibration(self) -> bool:
        return self.calibration != NONE

    @property
    def needs_qat_model(self) -> bool:
        return self.source == QAT_MODEL

    @property
    def integer_only(self) -> bool:
        """No float op may remain (validate() checks the converted model)."""
        return self.supported_ops == (BUILTINS_INT8,)

    @property
    def takes_calibration_methods(self) -> bool:
        """Its activation ranges may come from the range-method sweep (ranges.py,
        QuantizeSettings.calibration_methods): it has calibrated integer activations and no
        reason against. A converter variant is then quantized from the calibrated model holding
        the chosen ranges; the selective search starts from that model."""
        return bool(self.activations) and not self.no_range_methods

    def io_type(self, integer_io_type: Optional[str]) -> str:
        """The model's input and output type: float32, or the integer type for an
        integer-I/O variant (integer_io_type, "int8" or "uint8"). A variant with integer I/O
        on request gets it when integer_io_type is given, float32 when it is None."""
        if self.io == FLOAT_IO or (self.io == INTEGER_IO_ON_REQUEST and integer_io_type is None):
            return "float32"
        if integer_io_type not in INTEGER_IO_TYPES:
            raise ValueError(f"{self.name} has integer input and output: the integer type must be one of "
                             f"{list(INTEGER_IO_TYPES)}, not {integer_io_type!r}")
        return integer_io_type

    def converter_settings(self, integer_io_type: Optional[str] = "int8") -> ConverterSettings:
        """The converter's configuration, as the manifest records it and convert.configure
        applies it."""
        io = self.io_type(integer_io_type)
        settings = ConverterSettings(
            optimizations=["DEFAULT"] if self.optimize else [], supported_ops=list(self.supported_ops),
            supported_types=list(self.supported_types), representative_dataset=self.takes_calibration,
            inference_input_type=io, inference_output_type=io)
        if self.backend == SELECTIVE_SEARCH:
            settings.denylisted_nodes = "the layers listed under selective.float_layers"
        if self.backend == LITERT_QUANTIZER:
            settings.litert_recipe = self.litert_recipe
        return settings


RECIPES: Dict[str, VariantRecipe] = {r.name: r for r in (
    VariantRecipe(FLOAT32, "reference; any CPU", optimize=False),
    VariantRecipe(DYNAMIC_RANGE, "CPU (smaller file; float activations)"),
    VariantRecipe(FLOAT16, "GPU delegate (float16 weights)", supported_types=("float16",)),
    VariantRecipe(FULL_INTEGER, "CPU, with float fallback and float I/O", calibration=REQUIRED,
                  weight_corrections=True, activations="int8"),
    VariantRecipe(INTEGER_ONLY, "Edge TPU, microcontrollers, NPUs (integer I/O, no float ops)", calibration=REQUIRED,
                  io=INTEGER_IO, supported_ops=(BUILTINS_INT8,), weight_corrections=True, activations="int8"),
    # Calibration covers what the QAT model left without a learned range; a range method would
    # replace the ranges training learned (and the weights adapted to) with ones from statistics.
    VariantRecipe(QAT_INT8, "as integer_only, from the quantization-aware model", source=QAT_MODEL,
                  calibration=WHEN_GIVEN, io=INTEGER_IO, supported_ops=(BUILTINS_INT8,), activations="int8",
                  no_range_methods="its activation ranges were learned in quantization-aware training, with the "
                                   "weights trained against them; calibration only fills the tensors training left "
                                   "without one, so a method chosen on statistics would overwrite what training "
                                   "learned"),
    # No calibration: every range comes from training, and what the QAT model left without a
    # range (its float input normalization) stays float.
    VariantRecipe(QAT_MIXED, "CPU: the quantization-aware model as trained (int8 where it learned ranges, float "
                             "where it stayed float, e.g. in-model input normalization), float I/O", source=QAT_MODEL),
    VariantRecipe(INT16X8, "accuracy rescue for int8-sensitive models: 16-bit activations, 8-bit weights, float I/O "
                           "(reference kernels on CPU: slower than int8; no XNNPACK support)", calibration=REQUIRED,
                  supported_ops=(INT16X8_OPS,), weight_corrections=True, activations="int16"),
    VariantRecipe(SELECTIVE_INTEGER, "CPU: integer except the few most sensitive layers, kept float",
                  calibration=REQUIRED, io=INTEGER_IO_ON_REQUEST, backend=SELECTIVE_SEARCH, weight_corrections=True,
                  activations="int8"),
    # Built only when named in QuantizeSettings.variants (contracts.ON_REQUEST_VARIANTS).
    VariantRecipe(INT4_WEIGHTS, "CPU, smallest file: 4-bit weights per channel, float activations quantized on the "
                                "fly (LiteRT Quantizer; runs in the ai-edge-litert interpreter)",
                  optimize=False, backend=LITERT_QUANTIZER, litert_recipe="dynamic_wi4_afp32"),
    VariantRecipe(INT4_BLOCKWISE, "CPU, smallest file: 4-bit weights with a scale per block of 32, float "
                                  "activations quantized on the fly (LiteRT Quantizer; runs in the ai-edge-litert "
                                  "interpreter)",
                  optimize=False, backend=LITERT_QUANTIZER, litert_recipe="dynamic_wi4b32_afp32"),
)}
assert tuple(RECIPES) == ALL_VARIANTS, "every variant name in contracts has one recipe, in the same order"
assert all(r.backend in (CONVERTER, SELECTIVE_SEARCH) and r.source == FLOAT_MODEL and r.needs_calibration
           for r in RECIPES.values() if r.takes_calibration_methods), \
    "swept ranges are built into calibrated converter or selective variants of the float model (build._build_one)"


def recipe(variant: str) -> VariantRecipe:
    """The recipe of a variant; a ValueError listing the valid names otherwise."""
    if variant not in RECIPES:
        raise ValueError(f"unknown variant {variant!r}: valid variants are {list(ALL_VARIANTS)}")
    return RECIPES[variant]
