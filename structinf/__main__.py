"""``python -m structinf`` (and ``torchrun ... -m structinf``): the ``structinf`` command."""

import sys

from .cli import main

sys.exit(main())
