"""GNU Radio 3.10 blocks around the edgediff streamer: denoise, reconstruct and separate.

The only place in edgediff that imports gnuradio (Debian's ``gnuradio`` package, for the system
Python). README, "Live streams", says how edgediff gets into that Python. GRC block definitions are
in ``grc/`` (point ``GRC_BLOCKS_PATH`` there), an example flowgraph in ``examples/``.
"""

from edgediff.tools.gnuradio.blocks import denoise, reconstruct, separate

__all__ = ["denoise", "reconstruct", "separate"]
