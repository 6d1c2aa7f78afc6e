"""The long-form extrapolation study: task, stand-in encoder cache, runs, grid, report."""
