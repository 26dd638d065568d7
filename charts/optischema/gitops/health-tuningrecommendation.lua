-- Argo CD health of a TuningRecommendation: waiting for a person is a healthy state; a change that failed or was
-- rolled back is degraded; measuring and applying are progress.
local phase = obj.status ~= nil and obj.status.phase or nil
if phase == "Failed" or phase == "RolledBack" then
  return {status = "Degraded", message = "The change " .. phase}
end
if phase == nil or phase == "Proposed" or phase == "Benchmarking" or phase == "Approved" or phase == "Applying" then
  return {status = "Progressing", message = phase or "Waiting for the operator"}
end
return {status = "Healthy", message = phase}
