"""hookrun notifier."""
