"""hookrun runner: performs the actions of launched runs and runs their executions."""
