-- Which rollout actions make sense now; each sets a mineru.dev/* annotation the operator consumes.
local actions = {}
local status = obj.status or {}
local rolling = status.canary ~= nil
actions["promote"] = {disabled = not rolling}
actions["promote-full"] = {disabled = not rolling}
actions["abort"] = {disabled = not rolling}
actions["retry"] = {disabled = status.failedRevisions == nil or #status.failedRevisions == 0}
actions["pause"] = {disabled = not rolling or status.paused == true}
actions["resume"] = {disabled = status.paused ~= true}
return actions
