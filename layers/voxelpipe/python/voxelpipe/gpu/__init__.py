"""The GPU half: workers that answer the state machine's task tokens, and their scaling (docs/gpu.md)."""
