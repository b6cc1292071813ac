"""hookrun's command-line tool (`hookrun`): send signed webhooks, follow and steer runs."""
