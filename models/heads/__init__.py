"""heads package; modules here register themselves (the registry imports them)."""
