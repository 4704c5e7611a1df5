"""``python -m edgevision``: the same entry point as the ``edgevision`` console script."""

from edgevision.cli.main import main

raise SystemExit(main())
