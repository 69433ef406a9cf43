-- `tidegate pause NAME`: spec.paused true holds the rollout where it is.
obj.spec.paused = true
return obj
