"""The quantization pipeline: configuration, the DAG factory and its runners."""
