-- Asks the operator to advance again by setting mineru.dev/resume; the operator consumes and removes it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["mineru.dev/resume"] = "true"
return obj
