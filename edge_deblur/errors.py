"""Errors the user can act on. Each message names the file (or source) and the problem."""


class EdgeDeblurError(Exception):
    """Base class: bad input or configuration, reported to the user without a traceback."""


class ImageError(EdgeDeblurError):
    """An image that cannot be read or written: missing, empty, truncated, undecodable, too large."""


class VideoError(EdgeDeblurError):
    """A video file or camera that cannot be opened, read or written."""


class ModelError(EdgeDeblurError):
    """A model that is missing, malformed, or not one image in and one image out."""
