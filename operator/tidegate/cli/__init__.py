"""The `tidegate` command (also `kubectl-tidegate`, a kubectl plugin)."""
