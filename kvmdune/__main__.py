"""``python -m kvmdune``: the kvmdune command."""

import sys

from .cli.main import main

sys.exit(main())
