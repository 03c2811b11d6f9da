"""The ``siprems`` command-line client of the SIPREMS Forecast API."""

__version__ = "0.1.0"
