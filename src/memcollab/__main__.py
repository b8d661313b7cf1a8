"""`python -m memcollab`."""

import sys

from memcollab.cli import main

sys.exit(main())
