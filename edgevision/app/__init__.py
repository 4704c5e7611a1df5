"""The composition root: builds the running system from the configuration, in dependency order.

Everything the ``run`` command runs is constructed here and only here (:func:`build`), each component from its
own config section, with explicit constructor arguments. ``app`` imports every package; nothing imports ``app``
except ``cli``.
"""

from edgevision.app.compose import RunOptions, build
from edgevision.app.system import System

__all__ = ["RunOptions", "System", "build"]
