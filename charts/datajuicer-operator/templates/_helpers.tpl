{{/* Names, labels and the image reference shared by every template. */}}

{{- define "dj.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dj.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "dj.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "dj.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dj.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dj.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "dj.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "dj.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: datajuicer-operator
{{- end -}}

{{- define "dj.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dj.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dj.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* An image of the runner or Ray: its own repository/tag, else the operator's. */}}
{{- define "dj.podImage" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- if and (not $image.repository) (not $image.tag) -}}
{{- include "dj.image" $root -}}
{{- else -}}
{{- printf "%s:%s" (default $root.Values.image.repository $image.repository) (default (default $root.Chart.AppVersion $root.Values.image.tag) $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches; fails on a contradictory setting. */}}
{{- define "dj.watchedNamespaces" -}}
{{- if and .Values.watch.allNamespaces .Values.watch.namespaces -}}
{{- fail "watch: set either watch.allNamespaces=true or a list in watch.namespaces, not both" -}}
{{- end -}}
{{- if and (not .Values.watch.allNamespaces) (not .Values.watch.namespaces) -}}
{{- fail "watch: watch.allNamespaces is false, so watch.namespaces must list at least one namespace" -}}
{{- end -}}
{{- join "," .Values.watch.namespaces -}}
{{- end -}}
