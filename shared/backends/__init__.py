"""Per-stage accelerator backends: which engine runs a heavy stage, on which device, in which precision.

See docs/backends.md. ``config`` reads the per-node environment, ``registry`` opens a stage with an
explicit fallback policy, ``manifest`` guards exported graphs, ``ort`` opens ONNX Runtime sessions.
"""
