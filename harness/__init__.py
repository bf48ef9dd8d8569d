"""harness: generate HTTP load from many processes and record every request.

The command line is :mod:`harness.cli`; the run directory it writes is read by the
separate :mod:`analysis` package.
"""

__version__ = "0.1.0"
