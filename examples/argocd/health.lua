-- Argo CD health of a MineruDeployment (mineru.dev/v1alpha1).
-- Until the operator has seen the current generation the object is Progressing; then its phase is
-- used as it is (Paused reads as Suspended) with the operator's one-line message.
local hs = {}
if obj.status == nil or obj.status.observedGeneration == nil
    or obj.metadata.generation ~= obj.status.observedGeneration then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local phases = {
  Healthy = "Healthy",
  Progressing = "Progressing",
  Paused = "Suspended",
  Degraded = "Degraded",
}
hs.status = phases[obj.status.phase] or "Unknown"
hs.message = obj.status.message or obj.status.phase or "No phase reported"
return hs
