"""Observe the cluster into an ObservedState, and execute a Plan's actions."""
