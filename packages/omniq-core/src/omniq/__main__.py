import sys

from omniq.cli import main

sys.exit(main())
