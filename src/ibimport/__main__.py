"""``python -m ibimport``: the same as the ``ibimport`` console script."""

from ibimport.cli import main

main()
