"""Forecasting: preprocessing, Prophet training, backtest metrics, prediction, restock.

The submodules import pandas and Prophet; this package itself imports nothing heavy, so
functions that only need the shared layer (submit, status) never pay for them.
"""
