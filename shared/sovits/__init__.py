"""SoVITS v2 family: semantic tokens + phones + reference -> waveform."""

from .config import SoVITSConfig
from .loader import load_sovits
from .synthesizer import Conditioning, Synthesizer
from .version import SoVITSVersion

__all__ = ["Conditioning", "SoVITSConfig", "SoVITSVersion", "Synthesizer", "load_sovits"]
