-- `tidegate promote NAME` (tidegate.cli.control decide_promote) as intents: spec.paused
-- false, pauseConditions cleared; with neither, skipStep names the current canary step
-- (the operator completes it if the rollout is still there), or, blue-green, promoteFull.
if obj.status == nil then
  obj.status = {}
end
local status = obj.status
local pausedBySpec = obj.spec.paused == true
local paused = status.pauseConditions ~= nil and table.getn(status.pauseConditions) > 0
if pausedBySpec then
  obj.spec.paused = false
end
if paused then
  status.pauseConditions = {}
end
if pausedBySpec or paused then
  return obj
end
if obj.spec.strategy.blueGreen ~= nil then
  status.promoteFull = true
  return obj
end
local steps = {}
if obj.spec.strategy.canary ~= nil and obj.spec.strategy.canary.steps ~= nil then
  steps = obj.spec.strategy.canary.steps
end
local index = status.currentStepIndex or 0
if status.controllerPause ~= true and status.skipStep ~= index and index < table.getn(steps) then
  status.skipStep = index
end
return obj
