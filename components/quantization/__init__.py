"""The pure library behind the components: no TFX imports here.

model_spec  the input/label contract written next to every model
data        tf.Example files -> model inputs; calibration generator; example writers
variants    each variant's recipe: source model, calibration, I/O, converter settings, device class
convert     TFLite variants: the converter configured from a recipe, conversion, description, validation
interpreter the TFLite interpreter: batching, round-then-clip int8 input, latency timing
stats       numbers: is_finite (and the statistics the gate uses)
selective   accuracy-aware selective integer quantization (selective_integer)
"""
