"""Run the status service: python -m hookrun.status [serve]."""

from hookrun.status.app import main

main()
