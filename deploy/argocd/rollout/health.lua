-- Argo CD health of a tidegate.io Rollout. The operator already judges the phase
-- (status.phase: Healthy | Progressing | Paused | Degraded, with status.message saying
-- why), so this surfaces it, as Argo CD's own argoproj.io/Rollout health.lua does for
-- Argo Rollouts v1.0+. Paused maps to Argo CD's Suspended.
-- Runs without the standard libraries (an argocd-cm customization): base and table only.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Tidegate operator to report the rollout's status"
  return hs
end
-- A status written for an older spec says nothing about this one (observedGeneration is
-- an integer, as kstatus reads it).
local observed = tonumber(obj.status.observedGeneration)
if observed == nil or observed < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for rollout spec update to be observed"
  return hs
end
local phase = obj.status.phase
if phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "Healthy" or phase == "Progressing" or phase == "Degraded" then
  hs.status = phase
else
  hs.status = "Unknown"
end
hs.message = obj.status.message or ""
if hs.status == "Unknown" then
  hs.message = "unknown phase " .. tostring(phase) .. ": " .. hs.message
end
return hs
