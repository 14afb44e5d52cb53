"""Audio utilities: loading, resampling, WAV writing, chunk joining."""
