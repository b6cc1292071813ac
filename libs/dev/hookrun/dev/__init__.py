"""hookrun dev."""
