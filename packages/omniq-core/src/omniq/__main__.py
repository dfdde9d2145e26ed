"""``python -m omniq``: the ``omniq`` command."""

import sys

from omniq.cli import main

sys.exit(main())
