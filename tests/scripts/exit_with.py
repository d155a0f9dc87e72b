"""Exit with the code given as the first argument (checks that ./stack run passes it through)."""

import sys

sys.exit(int(sys.argv[1]))
