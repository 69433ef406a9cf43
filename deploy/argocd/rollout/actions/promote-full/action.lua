-- `tidegate promote --full NAME` (tidegate.cli.control decide_promote): skip the remaining
-- steps and analysis; a pause (spec.paused, pause conditions) ends with it.
if obj.status == nil then
  obj.status = {}
end
if obj.spec.paused == true then
  obj.spec.paused = false
end
if obj.status.pauseConditions ~= nil and table.getn(obj.status.pauseConditions) > 0 then
  obj.status.pauseConditions = {}
end
obj.status.promoteFull = true
return obj
