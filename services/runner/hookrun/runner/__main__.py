"""Run the runner: python -m hookrun.runner."""

from hookrun.runner.app import main

main()
