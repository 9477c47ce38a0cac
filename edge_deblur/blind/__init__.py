"""Blind deblurring: estimate the blur kernel of an image, then restore it with a learned prior.

    from edge_deblur.blind import estimate_kernel, restore
    kernel = estimate_kernel(image)              # or estimate_kernel(image, size=25)
    sharp = restore(image, kernel)               # HQS with the bundled denoiser as the prior

``BlindDeblurrer`` does both as one method; ``AutoDeblurrer`` checks the result and falls back to a
network when the estimate fails (``edge_deblur.blind.method``).
"""

from .kernel import KernelConfig, estimate_kernel
from .method import AutoDeblurrer, BlindConfig, BlindDeblurrer, BlindResult
from .restore import RestoreConfig, restore

__all__ = ["KernelConfig", "estimate_kernel", "RestoreConfig", "restore", "BlindConfig", "BlindDeblurrer",
           "AutoDeblurrer", "BlindResult"]
