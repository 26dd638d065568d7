-- Argo CD health of an optischema.io PostgresTarget: Ready is healthy, Stalled needs a person, anything else is
-- still being worked on (a fresh target, a database that is down and retried), and so is a spec edit the operator
-- has not observed yet (status.observedGeneration behind metadata.generation).
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if obj.status ~= nil and obj.status.observedGeneration ~= nil and generation ~= nil
    and obj.status.observedGeneration ~= generation then
  return {status = "Progressing", message = "Waiting for the operator to observe generation " .. generation}
end
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Stalled" and c.status == "True" then
      return {status = "Degraded", message = c.message}
    end
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" and c.status == "True" then
      return {status = "Healthy", message = c.message}
    end
    if c.type == "Ready" then
      hs.message = c.message
    end
  end
end
return hs
