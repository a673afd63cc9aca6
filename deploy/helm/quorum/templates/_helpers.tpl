{{/*
Names, labels and the peer addresses shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "quorum.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name. Pod names are <fullname>-<ordinal> and must stay DNS
labels, hence the truncation (StatefulSet pods also carry a controller hash label of up to
~10 characters, so 52 leaves room).
*/}}
{{- define "quorum.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "quorum.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's pods; never change them (selectors are immutable). */}}
{{- define "quorum.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quorum.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "quorum.labels" -}}
helm.sh/chart: {{ include "quorum.chart" . }}
{{ include "quorum.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The headless Service that gives every pod a stable DNS name. */}}
{{- define "quorum.headless" -}}
{{- printf "%s-headless" (include "quorum.fullname" .) }}
{{- end }}

{{/* <headless>.<namespace>.svc.<clusterDomain>: the suffix of every pod's DNS name. */}}
{{- define "quorum.peerDomain" -}}
{{- printf "%s.%s.svc.%s" (include "quorum.headless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
The --join list: every pod's cluster address in ordinal order, itself included. All pods
get the same list; the pod whose --advertise equals the first entry (ordinal 0) may found
the cluster once all the others answer, every other pod joins.
*/}}
{{- define "quorum.joinList" -}}
{{- $fullname := include "quorum.fullname" . }}
{{- $domain := include "quorum.peerDomain" . }}
{{- $peers := list }}
{{- range $i := until (int .Values.replicas) }}
{{- $peers = append $peers (printf "%s-%d.%s:%d" $fullname $i $domain (int $.Values.ports.cluster)) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{/* The majority of `replicas`: floor(n/2)+1. */}}
{{- define "quorum.majority" -}}
{{- add (div (int .Values.replicas) 2) 1 }}
{{- end }}

{{/* The image reference; the tag defaults to the chart's appVersion. */}}
{{- define "quorum.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* SIGTERM to SIGKILL: the drain grace rounded up to seconds, plus 15 s to exit. */}}
{{- define "quorum.terminationGrace" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add (div (add (int .Values.cluster.drainGraceMs) 999) 1000) 15 }}
{{- end }}
{{- end }}

{{/* The Secret mounted at /certs (ca.crt, node.crt, node.key): the given one or the generated one. */}}
{{- define "quorum.tlsSecret" -}}
{{- default (printf "%s-node-tls" (include "quorum.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/* The Secret holding tokens.yaml for --worker-tokens-file: the given one or the generated one. */}}
{{- define "quorum.workerTokensSecret" -}}
{{- default (printf "%s-worker-tokens" (include "quorum.fullname" .)) .Values.workerAuth.existingSecret }}
{{- end }}

{{/* The Secret holding the generated bootstrap worker token (key `token`). */}}
{{- define "quorum.workerTokenSecret" -}}
{{- printf "%s-worker-token" (include "quorum.fullname" .) }}
{{- end }}

{{/* The Secret holding the generated operator certificate (ca.crt, client.admin.crt/key). */}}
{{- define "quorum.clientAdminSecret" -}}
{{- printf "%s-client-admin" (include "quorum.fullname" .) }}
{{- end }}
