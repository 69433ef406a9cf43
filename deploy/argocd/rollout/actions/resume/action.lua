-- `tidegate resume NAME`: spec.paused false, nothing else. It never ends a pause step or an
-- inconclusive analysis (promote does), unlike Argo CD's argoproj.io/Rollout resume.
obj.spec.paused = false
return obj
