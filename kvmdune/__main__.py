"""``python -m kvmdune``: the kvmdune command."""

import sys

from .cli.resident import redirect_to_client

redirect_to_client(sys.argv[1:])     # KVMDUNE_STARTUP=resident: the native client's path

from .cli.main import main  # noqa: E402

sys.exit(main())
