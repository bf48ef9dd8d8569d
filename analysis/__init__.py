"""analysis: read a run directory written by the harness and tell what it shows.

This package never imports ``harness``: a notebook needs only ``analysis`` and pandas.
"""

__version__ = "0.1.0"
