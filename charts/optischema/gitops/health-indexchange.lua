-- Argo CD health of an IndexChange: Applied (or Superseded, nothing left to do) is healthy, and so is a change
-- accepted and scheduled for its target's maintenance window (WaitingForWindow: it may wait days, and that is its
-- plan, not a rollout in progress); Failed, RolledBack or Stalled is degraded; pending, applying and verifying are
-- progress. A status written for an older generation says nothing about the spec yet: progress.
local status = obj.status or {}
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if status.observedGeneration ~= nil and generation ~= nil and status.observedGeneration ~= generation then
  return {status = "Progressing", message = "Waiting for the operator to observe generation " .. generation}
end
local phase = status.phase
local ready = nil
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Stalled" and c.status == "True" then
      return {status = "Degraded", message = c.message}
    end
    if c.type == "Ready" then
      ready = c.message
    end
  end
end
if phase == "Applied" or phase == "Superseded" then
  return {status = "Healthy", message = phase}
end
if phase == "WaitingForWindow" then
  return {status = "Healthy", message = "Scheduled: " .. (ready or "waiting for the target's next maintenance window")}
end
if phase == "Failed" or phase == "RolledBack" then
  return {status = "Degraded", message = phase}
end
return {status = "Progressing", message = phase or "Pending"}
