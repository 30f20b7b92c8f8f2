"""``python -m smartapp.catalog check|list FOLDER``: the catalog's command line (see `main`)."""

import sys

from smartapp.catalog.cli import main

sys.exit(main())
