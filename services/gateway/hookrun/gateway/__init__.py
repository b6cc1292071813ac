"""hookrun gateway."""
