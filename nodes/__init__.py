"""dora nodes: thin main() functions wiring events to library calls."""
