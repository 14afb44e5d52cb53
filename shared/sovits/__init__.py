"""SoVITS v2 family: semantic tokens + phones + reference -> waveform."""
