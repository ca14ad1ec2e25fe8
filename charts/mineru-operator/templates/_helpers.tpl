{{- define "mineru-operator.labels" -}}
app.kubernetes.io/name: mineru-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "mineru-operator.selectorLabels" -}}
app.kubernetes.io/name: mineru-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* A map as `k=v,k2=v2`, the form of the operator's label flags. */ -}}
{{- define "mineru-operator.keyValues" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{- /* The operator image: by digest when one is given, else by tag (the chart's appVersion). */ -}}
{{- define "mineru-operator.image" -}}
{{- with .Values.image -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository (.tag | default $.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
{{- end }}
