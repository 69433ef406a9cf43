-- Argo CD health of a tidegate.io AnalysisRun, as Argo CD's argoproj.io/AnalysisRun health.lua:
-- Pending/Running Progressing, Successful Healthy, Failed/Error Degraded, Inconclusive Unknown
-- (the Rollout it belongs to shows Suspended and waits for a promote).
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for analysis run to finish: status has not been reconciled."
  return hs
end
local phase = status.phase
if phase == "Pending" or phase == "Running" then
  hs.status = "Progressing"
  hs.message = status.message or "Analysis run is running"
elseif phase == "Successful" then
  hs.status = "Healthy"
  hs.message = status.message or "Analysis run completed successfully"
elseif phase == "Failed" or phase == "Error" then
  hs.status = "Degraded"
  hs.message = status.message or ("Analysis run: " .. phase)
else
  hs.status = "Unknown"
  hs.message = status.message or "Analysis run was inconclusive"
end
return hs
