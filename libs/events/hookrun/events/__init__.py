"""hookrun events."""
