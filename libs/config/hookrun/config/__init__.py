"""hookrun config."""
