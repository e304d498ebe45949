"""``python -m scl_lle`` runs the command line (also under ``torchrun``)."""

import sys

from .cli.commands import main

sys.exit(main())
