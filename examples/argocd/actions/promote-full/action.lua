-- Asks the operator to promote the canary at once by setting mineru.dev/promote; the operator consumes and removes it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["mineru.dev/promote"] = "full"
return obj
