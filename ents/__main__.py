"""``python -m ents`` is the ``ents`` command."""

import sys

from .cli import main

sys.exit(main())
