"""``python -m infofusion`` (and ``torchrun -m infofusion``) run the command-line interface."""

import sys

from .cli import main

sys.exit(main())
