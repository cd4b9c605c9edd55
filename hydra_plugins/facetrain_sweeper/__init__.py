"""Hydra discovers sweepers under ``hydra_plugins``; the work is done in ``trainer.sweep``."""
