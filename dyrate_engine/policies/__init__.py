"""Pruning policies, one per file (kvpress style), each citing its paper; ``spec`` parses their
command-line spelling."""
from .base import Dense, MonitorStats, Policy, n_keep_for
from .dyrate import DyRate
from .fastv import FastV
from .random_keep import RandomKeep
from .schedule import Schedule
from .spec import POLICY_HELP, parse_policy

__all__ = ["Policy", "MonitorStats", "Dense", "FastV", "Schedule", "RandomKeep", "DyRate", "n_keep_for",
           "POLICY_HELP", "parse_policy"]
