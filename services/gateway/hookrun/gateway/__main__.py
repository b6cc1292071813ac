"""Run the gateway: python -m hookrun.gateway."""

from hookrun.gateway.app import main

main()
