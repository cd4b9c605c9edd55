"""Evaluators: held-out and `.bin` verification, per-family album clustering."""
