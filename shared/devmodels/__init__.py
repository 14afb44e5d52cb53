"""Random-weight development models written in the official GPT-SoVITS formats."""
