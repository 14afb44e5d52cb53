#!/usr/bin/env python3
"""Build TensorRT engines for the graphs in an export folder (same as `gsv-build-tensorrt`).

Example: python scripts/build_tensorrt.py --onnx-dir models/onnx --precision float16
Needs an NVIDIA GPU and onnxruntime-gpu with the TensorRT execution provider.
"""

from dora_gpt_sovits.backends.tensorrt import main

if __name__ == "__main__":
    main()
