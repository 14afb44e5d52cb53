#!/usr/bin/env python3
"""Export the GPT, SoVITS, BERT and CN-HuBERT stages to ONNX with manifests (same as `gsv-export-onnx`).

Example: python scripts/export_onnx.py --out models/onnx --precision float32 float16
"""

from dora_gpt_sovits.backends.export_cli import main

if __name__ == "__main__":
    main()
