"""In-process dora operators (run by the dora runtime node)."""
