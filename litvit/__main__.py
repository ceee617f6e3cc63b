"""``python -m litvit``: the same as the ``litvit`` command."""
import sys

from .cli import main

sys.exit(main())
