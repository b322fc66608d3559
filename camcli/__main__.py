"""``python -m camcli`` runs the command line."""

from camcli.cli import main

main()
