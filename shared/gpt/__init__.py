"""GPT (Text2Semantic): semantic-token decoding.

Import from the modules (this package deliberately re-exports nothing, so that the module
``generate`` is never shadowed by the function of the same name):

* ``loader.load_gpt(path, device, dtype) -> Text2Semantic``
* ``generate.generate / generate_stream / generate_batch`` and ``sampling.SamplingParams``
* ``model.Text2Semantic`` (``prefill``, ``step``), ``kv_cache.KVCache``, ``config.GPTConfig``
"""
