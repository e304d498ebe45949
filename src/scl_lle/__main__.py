"""``python -m scl_lle`` runs the command line (also under ``torchrun``)."""

import sys

from .cli import main

sys.exit(main())
