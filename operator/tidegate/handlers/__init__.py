"""The thin kopf layer: map watch events to per-Rollout reconcile loops."""
