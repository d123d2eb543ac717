"""The training application: one loop (optimiser, schedule, AMP, accumulation, checkpoints, logging) for every task."""
