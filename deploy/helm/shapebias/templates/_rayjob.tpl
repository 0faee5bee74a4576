{{/*
One RayJob, for an experiment of .Values.rayjobs.experiments. Called with
(dict "ctx" $ "experiment" "train_resnet" "cfg" <its values>).
The entry point is `python -m shapebias.cluster driver EXPERIMENT --job-name NAME -P k=v ...`:
the driver finds or creates the MLflow run of this RayJob (so a retry resumes it), points Ray
Train storage at s3://<bucket>/ray/<run id> and runs `python -m training.<experiment>` with
MLproject's flags. `shapebias submit` replaces the name and the -P parameters.
Every pod runs as the chart's Ray service account with the job's own MLflow account and S3 key
(never the admin's), and the Ray cluster requires the token of rayjobs.auth.existingSecret.
*/}}
{{- define "shapebias.rayjob" -}}
{{- $ := .ctx -}}
{{- $exp := .experiment -}}
{{- $cfg := .cfg -}}
{{- $name := printf "%s-%s" (include "shapebias.fullname" $ | trunc 30 | trimSuffix "-") ($exp | replace "_" "-") -}}
{{- $params := list -}}
{{- range $k, $v := ($cfg.params | default dict) -}}
{{- $params = append $params (printf "-P %s" (printf "%s=%v" $k $v | squote)) -}}
{{- end -}}
{{- $pod := dict "ctx" $ "serviceAccount" (include "shapebias.ray.serviceAccount" $) -}}
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
        {{- include "shapebias.rayjob.podLabels" (dict "ctx" $ "experiment" $exp) | nindent 8 }}
    spec:
      restartPolicy: Never
      {{- include "shapebias.podCommon" $pod | nindent 6 }}
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
    authOptions:
      mode: token
      secretName: {{ $.Values.rayjobs.auth.existingSecret | quote }}
    headGroupSpec:
      rayStartParams:
        # reached by the submitter and the KubeRay operator; token-authenticated, and the
        # NetworkPolicies admit only the release's Ray pods and the operator
        dashboard-host: "0.0.0.0"
        num-gpus: "0"
      template:
        metadata:
          labels:
            {{- include "shapebias.rayjob.podLabels" (dict "ctx" $ "experiment" $exp) | nindent 12 }}
        spec:
          {{- include "shapebias.podCommon" (merge (dict "nodeSelector" $.Values.rayjobs.head.nodeSelector "tolerations" $.Values.rayjobs.head.tolerations) $pod) | nindent 10 }}
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
              {{- include "shapebias.rayjob.podLabels" (dict "ctx" $ "experiment" $exp) | nindent 14 }}
          spec:
            {{- include "shapebias.podCommon" (merge (dict "nodeSelector" $.Values.rayjobs.gpuWorkers.nodeSelector "tolerations" $.Values.rayjobs.gpuWorkers.tolerations) $pod) | nindent 12 }}
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

{{/* Labels of every RayJob pod (submitter, head, workers). */}}
{{- define "shapebias.rayjob.podLabels" -}}
{{ include "shapebias.componentSelector" (dict "ctx" .ctx "component" "rayjob") }}
shapebias.io/experiment: {{ .experiment }}
{{- end -}}

{{/* Environment of the Ray head and workers: the job's own MLflow account and S3 key. */}}
{{- define "shapebias.rayjob.env" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ include "shapebias.mlflow.url" . | quote }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .Values.mlflow.auth.jobSecret | quote }}, key: username}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.mlflow.auth.jobSecret | quote }}, key: password}
- name: MLFLOW_EXPERIMENT_NAME
  value: {{ .Values.rayjobs.experimentName | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .Values.s3.jobSecret | quote }}, key: access-key-id}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.s3.jobSecret | quote }}, key: secret-access-key}
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

{{/* The Secrets a RayJob may reference: the job's MLflow account and S3 key, and extraEnv's. */}}
{{- define "shapebias.rayjob.allowedSecrets" -}}
{{- $names := list .Values.mlflow.auth.jobSecret .Values.s3.jobSecret -}}
{{- range .Values.rayjobs.extraEnv -}}
{{- if and .valueFrom .valueFrom.secretKeyRef -}}{{- $names = append $names .valueFrom.secretKeyRef.name -}}{{- end -}}
{{- end -}}
{{- $names | uniq | toJson -}}
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
