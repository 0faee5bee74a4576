{{/*
The fields every pod spec of the chart shares: service account (its token never mounted),
security context, pull secrets and scheduling. Called with a dict:
  ctx             the root context ($)
  serviceAccount  a ServiceAccount name (optional)
  securityContext the pod security context (optional; default .Values.podSecurityContext)
  nodeSelector, tolerations, affinity (optional)
Used as `{{- include "shapebias.podCommon" (dict ...) | nindent N }}` at the pod spec's indent.
*/}}
{{- define "shapebias.podCommon" -}}
{{- $ := .ctx -}}
{{- if .serviceAccount -}}
serviceAccountName: {{ .serviceAccount }}
{{ end -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml (.securityContext | default $.Values.podSecurityContext) | nindent 2 }}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The container security context of every container (Pod Security `restricted`). */}}
{{- define "shapebias.containerSecurityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}
