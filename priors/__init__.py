"""The priors edgediff ships: one verified bundle directory per name (rf-qpsk, rf-chirp, rf-mix,
rf-qpsk-fast, gmm2d, radar-rd). Any command that takes a bundle takes the name too
(``edgediff sample rf-qpsk``).

Data only: the runtime finds these directories by path (``edgediff.runtime.bundle.SHIPPED_DIR``) and
checks their hashes like any bundle's. ``make priors`` rebuilds them from their recipes
(``edgediff.tools.priors``).
"""
