"""``python -m layerconnect.cli ...`` (also what ``torchrun -m layerconnect.cli train ...`` runs)."""

import sys

from . import main

sys.exit(main())
