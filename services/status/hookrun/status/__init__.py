"""hookrun status."""
