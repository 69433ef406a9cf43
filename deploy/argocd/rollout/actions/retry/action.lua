-- `tidegate retry NAME`: the intent is status.abort false, nothing else (Argo CD's
-- argoproj.io/Rollout retry removes the field instead).
if obj.status == nil then
  obj.status = {}
end
obj.status.abort = false
return obj
