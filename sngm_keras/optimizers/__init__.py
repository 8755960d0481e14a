"""Optimizers: SNGM and its baselines MSGD and LARS."""

from sngm_keras.optimizers.lars import LARS
from sngm_keras.optimizers.msgd import MSGD
from sngm_keras.optimizers.sngm import SNGM

__all__ = ["SNGM", "MSGD", "LARS"]
