{{/* Names, labels and the merged config. */}}
{{- define "deploy-watchdog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "deploy-watchdog.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "deploy-watchdog.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "deploy-watchdog.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "deploy-watchdog.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deploy-watchdog.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "deploy-watchdog.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "deploy-watchdog.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "deploy-watchdog.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "deploy-watchdog.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "deploy-watchdog.secretName" -}}
{{- default (include "deploy-watchdog.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The secret files that may be there: every one for an existing Secret (each key is
optional: an absent file is an unset secret), the non-empty values otherwise. */}}
{{- define "deploy-watchdog.secretKeys" -}}
{{- if .Values.secrets.existingSecret -}}
{{- toJson (list "pagerduty-routing-key" "slack-webhook-url" "datadog-api-key" "datadog-app-key") -}}
{{- else -}}
{{- $keys := list -}}
{{- if .Values.secrets.pagerdutyRoutingKey }}{{ $keys = append $keys "pagerduty-routing-key" }}{{ end -}}
{{- if .Values.secrets.slackWebhookUrl }}{{ $keys = append $keys "slack-webhook-url" }}{{ end -}}
{{- if .Values.secrets.datadogApiKey }}{{ $keys = append $keys "datadog-api-key" }}{{ end -}}
{{- if .Values.secrets.datadogAppKey }}{{ $keys = append $keys "datadog-app-key" }}{{ end -}}
{{- toJson $keys -}}
{{- end -}}
{{- end -}}

{{/* The documented example, the user's overrides, then what the chart owns. */}}
{{- define "deploy-watchdog.config" -}}
{{- $config := fromYaml (.Files.Get "files/deploy-watchdog.yaml") -}}
{{- $config = mustMergeOverwrite $config (deepCopy .Values.config) -}}
{{- $keys := include "deploy-watchdog.secretKeys" . | fromJsonArray -}}
{{- $secrets := dict "pagerduty_routing_key_file" nil "slack_webhook_url_file" nil "datadog_api_key_file" nil "datadog_app_key_file" nil -}}
{{- if has "pagerduty-routing-key" $keys }}{{ $_ := set $secrets "pagerduty_routing_key_file" "/etc/deploy-watchdog/secrets/pagerduty-routing-key" }}{{ end -}}
{{- if has "slack-webhook-url" $keys }}{{ $_ := set $secrets "slack_webhook_url_file" "/etc/deploy-watchdog/secrets/slack-webhook-url" }}{{ end -}}
{{- if has "datadog-api-key" $keys }}{{ $_ := set $secrets "datadog_api_key_file" "/etc/deploy-watchdog/secrets/datadog-api-key" }}{{ end -}}
{{- if has "datadog-app-key" $keys }}{{ $_ := set $secrets "datadog_app_key_file" "/etc/deploy-watchdog/secrets/datadog-app-key" }}{{ end -}}
{{- $_ := set $config "secrets" $secrets -}}
{{- if gt (int .Values.replicaCount) 1 }}
{{- $le := mustMergeOverwrite (dict) $config.leader_election (dict "enabled" true "lease_name" (include "deploy-watchdog.fullname" .)) -}}
{{- $_ := set $config "leader_election" $le -}}
{{- end -}}
{{- $_ := set $config "server" (dict "listen" (printf "0.0.0.0:%d" (int .Values.port))) -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "deploy-watchdog.watchedNamespaces" -}}
{{- $config := include "deploy-watchdog.config" . | fromYaml -}}
{{- toJson (default (list) $config.watch.namespaces) -}}
{{- end -}}

{{- define "deploy-watchdog.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* What the watchdog may do in a watched scope: nothing more. */}}
{{- define "deploy-watchdog.watchRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* True when no notification sink can be configured: enforce, no key, no existing Secret, no
environment the chart cannot see into. */}}
{{- define "deploy-watchdog.silent" -}}
{{- $config := include "deploy-watchdog.config" . | fromYaml -}}
{{- $keys := include "deploy-watchdog.secretKeys" . | fromJsonArray -}}
{{- $notify := $config.notify | default dict -}}
{{- $pd := and (has "pagerduty-routing-key" $keys) (dig "pagerduty" "enabled" true $notify) -}}
{{- $slack := and (has "slack-webhook-url" $keys) (dig "slack" "enabled" true $notify) -}}
{{- $env := or .Values.extraEnv .Values.envFrom -}}
{{- if and (eq (toString $config.mode) "enforce") (not (dig "allow_silent" false $notify)) (not $pd) (not $slack) (not $env) -}}
true
{{- end -}}
{{- end -}}

{{/* The pod's affinity: the user's, else a soft anti-affinity across nodes for two or more replicas. */}}
{{- define "deploy-watchdog.affinity" -}}
{{- if .Values.affinity -}}
{{- toYaml .Values.affinity -}}
{{- else if gt (int .Values.replicaCount) 1 -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "deploy-watchdog.selectorLabels" . | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* The pod's spread: the user's, else across zones (soft) for two or more replicas. */}}
{{- define "deploy-watchdog.topologySpread" -}}
{{- if .Values.topologySpreadConstraints -}}
{{- toYaml .Values.topologySpreadConstraints -}}
{{- else if gt (int .Values.replicaCount) 1 -}}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "deploy-watchdog.selectorLabels" . | nindent 6 }}
{{- end -}}
{{- end -}}

{{/* The label matchers of this release's series in the PrometheusRule. */}}
{{- define "deploy-watchdog.ruleSelector" -}}
{{- default (printf "namespace=%q" .Release.Namespace) .Values.prometheusRule.selector -}}
{{- end -}}
