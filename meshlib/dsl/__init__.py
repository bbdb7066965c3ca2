"""Framework-neutral step functions: each takes a World and typed arguments."""
