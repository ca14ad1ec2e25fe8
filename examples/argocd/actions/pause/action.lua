-- Asks the operator to stop advancing (rollback triggers keep watching) by setting mineru.dev/pause; the operator consumes and removes it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["mineru.dev/pause"] = "true"
return obj
