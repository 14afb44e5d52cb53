"""GPT (Text2Semantic): semantic-token decoding."""

from .config import GPTConfig
from .generate import GenerationResult, StopReason, TokenStream, generate, generate_batch, generate_stream
from .kv_cache import KVCache
from .loader import load_gpt
from .model import Text2Semantic
from .sampling import SamplingParams, sample

__all__ = [
    "GPTConfig",
    "GenerationResult",
    "KVCache",
    "SamplingParams",
    "StopReason",
    "Text2Semantic",
    "TokenStream",
    "generate",
    "generate_batch",
    "generate_stream",
    "load_gpt",
    "sample",
]
