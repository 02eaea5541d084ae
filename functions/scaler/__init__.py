"""Scaler Lambda: keeps GPU workers following the work queue (on a schedule and when a worker job ends)."""
