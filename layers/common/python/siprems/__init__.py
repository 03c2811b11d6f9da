"""SIPREMS Forecast: the library shared by every function (deployed as a Lambda layer)."""

__version__ = "0.1.0"
