-- Argo CD health of a TuningRecommendation: waiting for a person is a healthy state; a change that failed or was
-- rolled back is degraded; measuring and applying are progress, and so is a status older than the spec.
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if obj.status ~= nil and obj.status.observedGeneration ~= nil and generation ~= nil
    and obj.status.observedGeneration ~= generation then
  return {status = "Progressing", message = "Waiting for the operator to observe generation " .. generation}
end
local phase = obj.status ~= nil and obj.status.phase or nil
if phase == "Failed" or phase == "RolledBack" then
  return {status = "Degraded", message = "The change " .. phase}
end
if phase == nil or phase == "Proposed" or phase == "Benchmarking" or phase == "Approved" or phase == "Applying" then
  return {status = "Progressing", message = phase or "Waiting for the operator"}
end
return {status = "Healthy", message = phase}
