"""Pruning policies, one per file (kvpress style), each citing its paper."""
from .base import Dense, MonitorStats, Policy
from .dyrate import DyRate
from .fastv import FastV
from .schedule import Schedule

__all__ = ["Policy", "MonitorStats", "Dense", "FastV", "Schedule", "DyRate"]
