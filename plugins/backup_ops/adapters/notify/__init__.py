"""Delivering notifications: each configured channel gets the event it is routed, and a channel that
cannot deliver is logged, never raised, so it can never change a run's outcome."""

from __future__ import annotations

from backup_ops.adapters.notify.delivery import deliver

__all__ = ["deliver"]
