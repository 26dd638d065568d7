-- Argo CD health of an IndexChange: Applied (or Superseded, nothing left to do) is healthy; Failed, RolledBack or
-- Stalled is degraded; pending, waiting for a window, applying and verifying are progress.
local phase = obj.status ~= nil and obj.status.phase or nil
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Stalled" and c.status == "True" then
      return {status = "Degraded", message = c.message}
    end
  end
end
if phase == "Applied" or phase == "Superseded" then
  return {status = "Healthy", message = phase}
end
if phase == "Failed" or phase == "RolledBack" then
  return {status = "Degraded", message = phase}
end
return {status = "Progressing", message = phase or "Pending"}
