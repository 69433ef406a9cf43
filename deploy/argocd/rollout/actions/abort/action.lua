-- `tidegate abort NAME`: all traffic back to stable, phase Degraded.
if obj.status == nil then
  obj.status = {}
end
obj.status.abort = true
return obj
