"""Run the notifier: python -m hookrun.notifier."""

from hookrun.notifier.app import main

main()
