"""`python -m stackbackup ...`: the stack-backup CLI (see stackbackup.cli)."""

import sys

from stackbackup.cli import main

sys.exit(main())
