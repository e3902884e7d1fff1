"""``python -m analyzer`` runs the nicpath command."""

from .api.cli import main

main(prog_name="nicpath")
