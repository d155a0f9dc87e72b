"""`python -m ops`: the stack's command line (what ./stack runs inside .venv)."""

from ops.cli import main

main()
