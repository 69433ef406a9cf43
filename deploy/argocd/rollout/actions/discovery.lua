-- Which resource actions Argo CD offers for a tidegate.io Rollout: the CLI's own refusals
-- (tidegate.cli.control decide_*), so the UI offers only what the operator will act on.
local status = obj.status or {}
local spec = obj.spec or {}
local aborted = status.abort == true
local fullyPromoted = status.stableRS ~= nil and status.stableRS == status.currentPodHash
local pausedBySpec = spec.paused == true

local actions = {}
actions["promote"] = {["disabled"] = aborted or fullyPromoted}
actions["promote-full"] = {["disabled"] = aborted or fullyPromoted, ["displayName"] = "Promote Fully"}
actions["abort"] = {["disabled"] = aborted or fullyPromoted}
actions["retry"] = {["disabled"] = not aborted}
actions["pause"] = {["disabled"] = pausedBySpec}
actions["resume"] = {["disabled"] = not pausedBySpec}
actions["restart"] = {["disabled"] = false, ["displayName"] = "Restart Pods"}
return actions
