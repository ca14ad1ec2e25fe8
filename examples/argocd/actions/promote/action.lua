-- Asks the operator to leave the current step now by setting mineru.dev/promote; the operator consumes and removes it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["mineru.dev/promote"] = "step"
return obj
