"""edgediff.train: the torch side (models, data, the training loop, the torch reference).

Import submodules directly (``edgediff.train.models``): this package imports nothing eagerly, so
the numpy-only parts (``edgediff.train.datasets``) stay usable without torch.
"""
