"""The ``edgevision`` command line."""

import os

# OpenCV's own warnings ("can't open camera by index", FFmpeg probing) duplicate our one-line errors; it reads
# this variable when cv2 is first imported, which happens below this package.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
