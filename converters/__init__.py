"""Host toolchain: blur synthesis, training data, the teacher network, its trainer and exporters.

Runs on a workstation with TensorFlow/Keras; never shipped to a board (see ``edge_deblur``).
"""
