{{/* Names */}}
{{- define "shapebias.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shapebias.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shapebias.mlflow.fullname" -}}{{ include "shapebias.fullname" . | trunc 56 | trimSuffix "-" }}-mlflow{{- end -}}
{{- define "shapebias.postgresql.fullname" -}}{{ include "shapebias.fullname" . | trunc 52 | trimSuffix "-" }}-postgresql{{- end -}}
{{- define "shapebias.s3.fullname" -}}{{ include "shapebias.fullname" . | trunc 60 | trimSuffix "-" }}-s3{{- end -}}
{{- define "shapebias.rayjobs.fullname" -}}{{ include "shapebias.fullname" . | trunc 55 | trimSuffix "-" }}-rayjobs{{- end -}}
{{- define "shapebias.ray.serviceAccount" -}}{{ include "shapebias.fullname" . | trunc 59 | trimSuffix "-" }}-ray{{- end -}}

{{/* Labels. The selector labels plus app.kubernetes.io/component select a component's pods;
NetworkPolicies select peers by them within the release's namespace only. */}}
{{- define "shapebias.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shapebias.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shapebias.componentSelector" -}}
{{ include "shapebias.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shapebias.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "shapebias.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shapebias
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Images: repository:tag, or repository:tag@digest when a digest pins it. Called with an
image's values and the value path for the error message: (list .Values.image.training "image.training"). */}}
{{- define "shapebias.image" -}}
{{- $img := index . 0 -}}
{{- $path := index . 1 -}}
{{- $ref := printf "%s:%s" (required (printf "%s.repository is required" $path) $img.repository) (required (printf "%s.tag is required (pin the image)" $path) $img.tag) -}}
{{- if $img.digest -}}{{- $ref = printf "%s@%s" $ref $img.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}
{{- define "shapebias.trainingImage" -}}{{ include "shapebias.image" (list .Values.image.training "image.training") }}{{- end -}}
{{- define "shapebias.serverImage" -}}{{ include "shapebias.image" (list .Values.image.server "image.server") }}{{- end -}}

{{/* Required values: fail with a message naming the value and what it is for. */}}
{{- define "shapebias.validate" -}}
{{- $_ := required "mlflow.auth.existingSecret is required: the name of a Secret with keys admin-username, admin-password, flask-secret-key" .Values.mlflow.auth.existingSecret -}}
{{- $_ := required "s3.bucket is required: the S3 bucket for MLflow artifacts and Ray Train checkpoints" .Values.s3.bucket -}}
{{- $_ := required "mlflow.auth.jobSecret is required: the name of a Secret with keys username, password (the RayJobs' MLflow account)" .Values.mlflow.auth.jobSecret -}}
{{- $_ := required "s3.existingSecret is required: the name of a Secret with keys access-key-id, secret-access-key" .Values.s3.existingSecret -}}
{{- $_ := required "s3.jobSecret is required: the name of a Secret with keys access-key-id, secret-access-key (the RayJobs' own S3 key)" .Values.s3.jobSecret -}}
{{- $_ := required "rayjobs.auth.existingSecret is required: the name of a Secret with key auth_token (Ray token authentication)" .Values.rayjobs.auth.existingSecret -}}
{{- if eq .Values.mlflow.auth.jobSecret .Values.mlflow.auth.existingSecret -}}
{{- fail "mlflow.auth.jobSecret must differ from mlflow.auth.existingSecret: the RayJobs get their own MLflow account, never the admin's" -}}
{{- end -}}
{{- if eq .Values.s3.jobSecret .Values.s3.existingSecret -}}
{{- fail "s3.jobSecret must differ from s3.existingSecret: the RayJobs get their own S3 key, not the MLflow server's" -}}
{{- end -}}
{{- if not .Values.s3.inCluster.enabled -}}
{{- $_ := required "s3.endpoint is required: the S3 endpoint URL (e.g. https://s3.us-east-1.amazonaws.com), or set s3.inCluster.enabled=true" .Values.s3.endpoint -}}
{{- end -}}
{{- if .Values.postgresql.enabled -}}
{{- $_ := required "postgresql.existingSecret is required: the name of a Secret with keys username, password" .Values.postgresql.existingSecret -}}
{{- $_ := required "postgresql.tls.existingSecret is required: the name of a kubernetes.io/tls Secret with the database server's certificate" .Values.postgresql.tls.existingSecret -}}
{{- else -}}
{{- $_ := required "externalDatabase.host is required when postgresql.enabled=false" .Values.externalDatabase.host -}}
{{- $_ := required "externalDatabase.existingSecret is required when postgresql.enabled=false: a Secret with keys username, password" .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Service addresses */}}
{{- define "shapebias.mlflow.url" -}}
http://{{ include "shapebias.mlflow.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.mlflow.service.port }}
{{- end -}}

{{- define "shapebias.s3.endpoint" -}}
{{- if .Values.s3.inCluster.enabled -}}
http://{{ include "shapebias.s3.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.s3.inCluster.port }}
{{- else -}}
{{- .Values.s3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "shapebias.db.host" -}}
{{- if .Values.postgresql.enabled -}}
{{ include "shapebias.postgresql.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- else -}}
{{ .Values.externalDatabase.host }}
{{- end -}}
{{- end -}}

{{- define "shapebias.db.secret" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.existingSecret }}{{- else -}}{{ .Values.externalDatabase.existingSecret }}{{- end -}}
{{- end -}}

{{/* Host headers the MLflow server accepts: the Service's names, with and without the port. */}}
{{- define "shapebias.mlflow.allowedHosts" -}}
{{- $name := include "shapebias.mlflow.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $port := toString .Values.mlflow.service.port -}}
{{- $hosts := list -}}
{{- range (list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.%s" $name $ns .Values.clusterDomain)) -}}
{{- $hosts = append $hosts . -}}
{{- $hosts = append $hosts (printf "%s:%s" . $port) -}}
{{- end -}}
{{- $hosts = concat $hosts (list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*") .Values.mlflow.extraAllowedHosts -}}
{{- join "," $hosts -}}
{{- end -}}

