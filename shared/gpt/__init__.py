"""GPT (Text2Semantic): semantic-token decoding.

Import from the modules (this package deliberately re-exports nothing, so that the module
``generate`` is never shadowed by the function of the same name):

* ``loader.load_gpt(path, device, dtype) -> Text2Semantic``; ``model.Text2Semantic`` (the math:
  ``prefill``, ``step``), ``kv_cache.KVCache``, ``config.GPTConfig``
* ``options.make_decoder(model, TorchGPTOptions.from_env()) -> Decoder``: the decode path the
  settings pick, logged in one line; ``decoder.Decoder`` (the interface) and ``decoder.decode``
  (the one generation loop); implementations in ``module_decoder``, ``decode_layers`` (fused C++
  step), ``static_decode`` (torch.compile / CUDA graphs) and ``backends.gpt_runtime`` (ONNX/TensorRT)
* ``stopping``: upstream's stop rules, step limits and result slice
* ``generate.generate / generate_stream / generate_batch`` (a model or a decoder) and ``sampling.SamplingParams``
* ``weights``: CPU weight formats and product kernels (``half_matvec``, float16 decode weights)
"""
