"""edge-deblur: image deblurring for small devices.

    from edge_deblur import Deblurrer, read_image, write_image
    deblur = Deblurrer.load()            # the bundled default model
    write_image("sharp.png", deblur(read_image("blurry.jpg")))

    kernel = estimate_kernel(image)      # blind: the blur kernel of a still
    sharp = restore(image, kernel)       # restoration with the learned prior
"""

__version__ = "0.1.0"

from .errors import EdgeDeblurError, ImageError, ModelError, VideoError
from .images import read_image, write_image
from .metrics import laplacian_variance, psnr, ssim
from .model import Deblurrer, ModelInfo, bundled_models
from .blind import estimate_kernel, restore

__all__ = [
    "Deblurrer", "ModelInfo", "bundled_models", "read_image", "write_image", "psnr", "ssim",
    "laplacian_variance", "estimate_kernel", "restore", "EdgeDeblurError", "ImageError", "ModelError", "VideoError",
]
