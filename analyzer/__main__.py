"""``python -m analyzer`` runs the nicpath command."""

from .cli import main

main(prog_name="nicpath")
