"""The ``edgevision`` command line."""

import os

# OpenCV's own warnings ("can't open camera by index", FFmpeg probing) duplicate our one-line errors; it reads
# this variable when cv2 is first imported, which happens below this package.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

# OpenCV decodes an image of up to 2^30 pixels (3 GB as BGR, from a PNG of under 1 MB): on a 1-4 GB Pi `detect`
# or `models distill --images` on one huge panorama would wake the OOM killer. It reads this limit when cv2 is
# first imported; edgevision.safe_read.read_image names it in its error.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 27))
