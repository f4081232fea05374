"""Pruning policies, one per file (kvpress style), each citing its paper."""
from .base import Dense, MonitorStats, Policy

__all__ = ["Policy", "MonitorStats", "Dense"]
