-- Asks the operator to roll out the failed revisions again by setting mineru.dev/retry; the operator consumes and removes it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["mineru.dev/retry"] = "true"
return obj
