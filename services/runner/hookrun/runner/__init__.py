"""hookrun runner."""
