-- Asks the operator to roll back now by setting mineru.dev/abort; the operator consumes and removes it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["mineru.dev/abort"] = "true"
return obj
