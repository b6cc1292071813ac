"""Run the status service: python -m hookrun.status [serve|rebuild]."""

from hookrun.status.app import main

main()
