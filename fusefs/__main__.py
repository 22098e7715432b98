"""`python -m fusefs`: the `lifecyclefs` command."""

import sys

from fusefs.cli import main

sys.exit(main())
