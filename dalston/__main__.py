"""`python -m dalston …` is the `dalston` console script."""

import sys

from dalston.cli import main

sys.exit(main())
