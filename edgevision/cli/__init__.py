"""The ``edgevision`` command line."""
