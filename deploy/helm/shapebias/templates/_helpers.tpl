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
{{- define "shapebias.ray.serviceAccount" -}}{{ include "shapebias.fullname" . | trunc 59 | trimSuffix "-" }}-ray{{- end -}}

{{/* Labels */}}
{{- define "shapebias.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shapebias.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
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

{{/* Images: repository:tag[@digest] */}}
{{- define "shapebias.imageRef" -}}
{{- $ref := printf "%s:%s" .repository .tag -}}
{{- if .digest -}}{{- $ref = printf "%s@%s" $ref .digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}
{{- define "shapebias.trainingImage" -}}
{{- include "shapebias.imageRef" (dict "repository" (required "image.repository is required" .Values.image.repository) "tag" (required "image.tag is required (pin the training image)" .Values.image.tag) "digest" .Values.image.digest) -}}
{{- end -}}
{{- define "shapebias.serverImage" -}}
{{- include "shapebias.imageRef" (dict "repository" (required "image.repository is required" .Values.image.repository) "tag" (required "image.serverTag is required (pin the MLflow server image)" .Values.image.serverTag) "digest" "") -}}
{{- end -}}

{{/* Required values: fail with a message naming the value and what it is for. */}}
{{- define "shapebias.validate" -}}
{{- $_ := required "mlflow.auth.existingSecret is required: the name of a Secret with keys admin-username, admin-password, flask-secret-key" .Values.mlflow.auth.existingSecret -}}
{{- $_ := required "s3.bucket is required: the S3 bucket for MLflow artifacts and Ray Train checkpoints" .Values.s3.bucket -}}
{{- $_ := required "s3.existingSecret is required: the name of a Secret with keys access-key-id, secret-access-key" .Values.s3.existingSecret -}}
{{- if not .Values.s3.inCluster.enabled -}}
{{- $_ := required "s3.endpoint is required: the S3 endpoint URL (e.g. https://s3.us-east-1.amazonaws.com), or set s3.inCluster.enabled=true" .Values.s3.endpoint -}}
{{- end -}}
{{- if .Values.postgresql.enabled -}}
{{- $_ := required "postgresql.existingSecret is required: the name of a Secret with keys username, password" .Values.postgresql.existingSecret -}}
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

{{/* Security contexts */}}
{{- define "shapebias.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}
{{- define "shapebias.containerSecurityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}

{{/* Environment shared by every RayJob pod: MLflow and S3 settings from the chart's Secrets. */}}
{{- define "shapebias.rayjob.env" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ include "shapebias.mlflow.url" . | quote }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .Values.mlflow.auth.existingSecret | quote }}, key: admin-username}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.mlflow.auth.existingSecret | quote }}, key: admin-password}
- name: MLFLOW_EXPERIMENT_NAME
  value: {{ .Values.rayjobs.experimentName | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .Values.s3.existingSecret | quote }}, key: access-key-id}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.s3.existingSecret | quote }}, key: secret-access-key}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
- name: AWS_ENDPOINT_URL
  value: {{ include "shapebias.s3.endpoint" . | quote }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ include "shapebias.s3.endpoint" . | quote }}
- name: SHAPEBIAS_RAY_STORAGE
  value: {{ printf "s3://%s/ray" .Values.s3.bucket | quote }}
- name: HOME
  value: /tmp
{{- if .Values.rayjobs.data.existingClaim }}
- name: SHAPEBIAS_SHARED_DIR
  value: {{ .Values.rayjobs.data.mountPath | quote }}
{{- end }}
{{- with .Values.rayjobs.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "shapebias.rayjob.volumes" -}}
- name: tmp
  emptyDir: {}
- name: dshm
  emptyDir: {medium: Memory}
{{- if .Values.rayjobs.data.existingClaim }}
- name: data
  persistentVolumeClaim: {claimName: {{ .Values.rayjobs.data.existingClaim | quote }}, readOnly: true}
{{- end }}
{{- end -}}

{{- define "shapebias.rayjob.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: dshm, mountPath: /dev/shm}
{{- if .Values.rayjobs.data.existingClaim }}
- {name: data, mountPath: {{ .Values.rayjobs.data.mountPath | quote }}, readOnly: true}
{{- end }}
{{- end -}}

{{/*
One RayJob for an experiment. Called with (dict "ctx" $ "experiment" "train_resnet").
The entry point is `python -m shapebias.cluster driver EXPERIMENT --job-name NAME -P k=v ...`:
the driver finds or creates the MLflow run of this RayJob (so a retry resumes it), points Ray
Train storage at s3://<bucket>/ray/<run id> and runs `python -m training.<experiment>` with
MLproject's flags. `shapebias submit` replaces the name and the -P parameters.
*/}}
{{- define "shapebias.rayjob" -}}
{{- $ := .ctx -}}
{{- $exp := .experiment -}}
{{- $cfg := index $.Values.rayjobs.experiments $exp -}}
{{- $name := printf "%s-%s" (include "shapebias.fullname" $ | trunc 30 | trimSuffix "-") ($exp | replace "_" "-") -}}
{{- $params := list -}}
{{- range $k, $v := ($cfg.params | default dict) -}}
{{- $params = append $params (printf "-P %s" (printf "%s=%v" $k $v | squote)) -}}
{{- end -}}
{{- $podLabels := dict "app.kubernetes.io/instance" $.Release.Name "app.kubernetes.io/component" "rayjob" "shapebias.io/s3-client" "true" "shapebias.io/experiment" $exp -}}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: {{ $name }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "shapebias.labels" $ | nindent 4 }}
    app.kubernetes.io/component: rayjob
    shapebias.io/experiment: {{ $exp }}
spec:
  entrypoint: {{ printf "python -m shapebias.cluster driver %s --job-name %s %s" $exp $name (join " " $params) | trim | quote }}
  entrypointNumGpus: {{ $cfg.entrypointNumGpus | default 0 }}
  submissionMode: K8sJobMode
  backoffLimit: {{ $.Values.rayjobs.backoffLimit }}
  shutdownAfterJobFinishes: true
  ttlSecondsAfterFinished: {{ $.Values.rayjobs.ttlSecondsAfterFinished }}
  activeDeadlineSeconds: {{ $.Values.rayjobs.activeDeadlineSeconds }}
  submitterPodTemplate:
    metadata:
      labels:
        {{- toYaml $podLabels | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "shapebias.ray.serviceAccount" $ }}
      automountServiceAccountToken: false
      securityContext:
        {{- include "shapebias.podSecurityContext" $ | nindent 8 }}
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ray-job-submitter
          image: {{ include "shapebias.trainingImage" $ }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          env:
            - {name: HOME, value: /tmp}
          resources:
            requests: {cpu: 100m, memory: 256Mi}
            limits: {cpu: "1", memory: 1Gi}
          securityContext:
            {{- include "shapebias.containerSecurityContext" $ | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: tmp
          emptyDir: {}
  rayClusterSpec:
    rayVersion: {{ $.Values.rayjobs.rayVersion | quote }}
    enableInTreeAutoscaling: false
    headGroupSpec:
      rayStartParams:
        dashboard-host: "0.0.0.0"
        num-gpus: "0"
      template:
        metadata:
          labels:
            {{- toYaml $podLabels | nindent 12 }}
        spec:
          serviceAccountName: {{ include "shapebias.ray.serviceAccount" $ }}
          automountServiceAccountToken: false
          securityContext:
            {{- include "shapebias.podSecurityContext" $ | nindent 12 }}
          {{- with $.Values.imagePullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $.Values.rayjobs.head.nodeSelector }}
          nodeSelector:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $.Values.rayjobs.head.tolerations }}
          tolerations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          containers:
            - name: ray-head
              image: {{ include "shapebias.trainingImage" $ }}
              imagePullPolicy: {{ $.Values.image.pullPolicy }}
              ports:
                - {name: gcs, containerPort: 6379}
                - {name: dashboard, containerPort: 8265}
                - {name: client, containerPort: 10001}
              env:
                {{- include "shapebias.rayjob.env" $ | nindent 16 }}
              resources:
                {{- toYaml $.Values.rayjobs.head.resources | nindent 16 }}
              securityContext:
                {{- include "shapebias.containerSecurityContext" $ | nindent 16 }}
              volumeMounts:
                {{- include "shapebias.rayjob.volumeMounts" $ | nindent 16 }}
          volumes:
            {{- include "shapebias.rayjob.volumes" $ | nindent 12 }}
    workerGroupSpecs:
      - groupName: gpu
        replicas: {{ $cfg.workers }}
        minReplicas: {{ $cfg.workers }}
        maxReplicas: {{ max $cfg.workers 1 }}
        rayStartParams: {}
        template:
          metadata:
            labels:
              {{- toYaml $podLabels | nindent 14 }}
          spec:
            serviceAccountName: {{ include "shapebias.ray.serviceAccount" $ }}
            automountServiceAccountToken: false
            securityContext:
              {{- include "shapebias.podSecurityContext" $ | nindent 14 }}
            {{- with $.Values.imagePullSecrets }}
            imagePullSecrets:
              {{- toYaml . | nindent 14 }}
            {{- end }}
            {{- with $.Values.rayjobs.gpuWorkers.nodeSelector }}
            nodeSelector:
              {{- toYaml . | nindent 14 }}
            {{- end }}
            {{- with $.Values.rayjobs.gpuWorkers.tolerations }}
            tolerations:
              {{- toYaml . | nindent 14 }}
            {{- end }}
            containers:
              - name: ray-worker
                image: {{ include "shapebias.trainingImage" $ }}
                imagePullPolicy: {{ $.Values.image.pullPolicy }}
                env:
                  {{- include "shapebias.rayjob.env" $ | nindent 18 }}
                resources:
                  requests:
                    {{- toYaml $.Values.rayjobs.gpuWorkers.resources.requests | nindent 20 }}
                    nvidia.com/gpu: {{ $.Values.rayjobs.gpuWorkers.gpus | quote }}
                  limits:
                    {{- toYaml $.Values.rayjobs.gpuWorkers.resources.limits | nindent 20 }}
                    nvidia.com/gpu: {{ $.Values.rayjobs.gpuWorkers.gpus | quote }}
                securityContext:
                  {{- include "shapebias.containerSecurityContext" $ | nindent 18 }}
                volumeMounts:
                  {{- include "shapebias.rayjob.volumeMounts" $ | nindent 18 }}
            volumes:
              {{- include "shapebias.rayjob.volumes" $ | nindent 14 }}
{{- end -}}
