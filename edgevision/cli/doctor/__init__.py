"""``edgevision doctor``: pure checks (:mod:`.checks`) over facts read from the system (:mod:`.probe`)."""
