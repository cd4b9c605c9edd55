"""Registered Keras callbacks; each module registers itself."""
