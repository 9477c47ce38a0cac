"""Deblur one image with the Python API and save input and result side by side.

    python examples/deblur_image.py examples/images/clock_motion.png out/clock.png
"""

import sys

from edge_deblur import Deblurrer, read_image, write_image
from edge_deblur.images import side_by_side

source, target = sys.argv[1], sys.argv[2]
deblur = Deblurrer.load()  # the bundled default model; threads default to all cores
image = read_image(source)
result = deblur(image)
write_image(target, result)
write_image(target.rsplit(".", 1)[0] + "_compare.jpg", side_by_side([("input", image), ("deblurred", result)]))
print(f"{source} -> {target} with {deblur.info.name} ({deblur.info.backend}, {deblur.plan(*image.shape[:2]).count} window(s))")
