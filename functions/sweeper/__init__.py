"""Sweeper Lambda: on a schedule, finishes or re-drives every job left non-terminal past its bound."""
