{{/* Names, labels and the pieces every hookrun pod shares. */}}

{{- define "hookrun.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hookrun.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "hookrun.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hookrun.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "hookrun.secretName" -}}
{{- default (printf "%s-secrets" (include "hookrun.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "hookrun.tls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "hookrun.sasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end -}}
{{- end -}}

{{/* The Secret's keys mounted as files for the Kafka clients, as volume items. */}}
{{- define "hookrun.kafkaFiles" -}}
{{- if include "hookrun.sasl" . }}
- {key: kafka-sasl-password, path: sasl-password}
{{- end }}
{{- if and (include "hookrun.tls" .) .Values.kafka.tls.ca }}
- {key: kafka-ca.crt, path: ca.crt}
{{- end }}
{{- if and (include "hookrun.tls" .) .Values.kafka.tls.clientCertificate }}
- {key: kafka-tls.crt, path: tls.crt}
- {key: kafka-tls.key, path: tls.key}
{{- end }}
{{- end -}}

{{/* Kafka and topic settings: every service and the topics Job. */}}
{{- define "hookrun.kafkaEnv" -}}
- {name: KAFKA_BOOTSTRAP_SERVERS, value: {{ .Values.kafka.bootstrapServers | quote }}}
- {name: KAFKA_SECURITY_PROTOCOL, value: {{ .Values.kafka.securityProtocol | quote }}}
{{- if include "hookrun.sasl" . }}
- {name: KAFKA_SASL_MECHANISM, value: {{ .Values.kafka.sasl.mechanism | quote }}}
- {name: KAFKA_SASL_USERNAME, value: {{ .Values.kafka.sasl.username | quote }}}
- {name: KAFKA_SASL_PASSWORD_FILE, value: /etc/hookrun/kafka/sasl-password}
{{- end }}
{{- if and (include "hookrun.tls" .) .Values.kafka.tls.ca }}
- {name: KAFKA_SSL_CAFILE, value: /etc/hookrun/kafka/ca.crt}
{{- end }}
{{- if and (include "hookrun.tls" .) .Values.kafka.tls.clientCertificate }}
- {name: KAFKA_SSL_CERTFILE, value: /etc/hookrun/kafka/tls.crt}
- {name: KAFKA_SSL_KEYFILE, value: /etc/hookrun/kafka/tls.key}
{{- end }}
- {name: HOOKRUN_NAMESPACE, value: {{ .Values.kafka.namespace | quote }}}
- {name: HOOKRUN_TOPIC_REPLICATION_FACTOR, value: {{ .Values.kafka.topics.replicationFactor | quote }}}
- {name: HOOKRUN_TOPIC_PARTITIONS, value: {{ .Values.kafka.topics.partitions | quote }}}
{{- end -}}

{{/* What every service reads besides Kafka: the config file, its ${env:...} secrets, logs
and OpenTelemetry. */}}
{{- define "hookrun.commonEnv" -}}
- {name: HOOKRUN_CONFIG, value: /etc/hookrun/config/hookrun.yaml}
- {name: LOG_FORMAT, value: {{ .Values.logFormat | quote }}}
- {name: LOG_LEVEL, value: {{ .Values.logLevel | quote }}}
{{- range $name, $value := .Values.otel }}
- {name: {{ $name }}, value: {{ $value | toString | quote }}}
{{- end }}
{{- end -}}

{{/* The environment the chart sets from its values for one service:
(dict "root" $ "component" "gateway"). */}}
{{- define "hookrun.serviceEnv" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $v := index $root.Values $component -}}
{{- $secret := include "hookrun.secretName" $root -}}
{{- $port := ternary $v.port $v.metricsPort (has $component (list "gateway" "status")) -}}
{{- include "hookrun.kafkaEnv" $root }}
{{ include "hookrun.commonEnv" $root }}
{{- if eq $component "gateway" }}
- {name: HOOKRUN_HOST, value: 0.0.0.0}
- {name: HOOKRUN_PORT, value: {{ $port | quote }}}
- {name: HOOKRUN_STATUS_URL, value: "http://{{ include "hookrun.fullname" $root }}-status:{{ $root.Values.status.service.port }}"}
{{- else if eq $component "status" }}
- {name: HOOKRUN_STATUS_HOST, value: 0.0.0.0}
- {name: HOOKRUN_STATUS_PORT, value: {{ $port | quote }}}
- {name: FORWARDED_ALLOW_IPS, value: {{ $v.forwardedAllowIps | quote }}}
{{- if eq $v.database "postgresql" }}
- name: HOOKRUN_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: database-url}}
{{- else }}
- {name: HOOKRUN_DATABASE_URL, value: "sqlite:////data/status/status.db"}
{{- end }}
{{- if or $root.Values.secrets.existingSecret $root.Values.secrets.adminToken }}
# Optional: without the key the admin API answers 503 "admin API disabled".
- name: HOOKRUN_ADMIN_TOKEN
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: admin-token, optional: true}}
{{- end }}
# Every replica signs and checks the dashboard's sessions with the same key.
- name: HOOKRUN_UI_SESSION_KEY
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: ui-session-key, optional: true}}
{{- else }}
- {name: HOOKRUN_METRICS_HOST, value: 0.0.0.0}
- {name: HOOKRUN_METRICS_PORT, value: {{ $port | quote }}}
{{- end }}
{{- if eq $component "runner" }}
- {name: HOOKRUN_DATA_DIR, value: /data/runner}
- {name: HOOKRUN_EXECUTION_SANDBOX, value: {{ $v.executionSandbox | quote }}}
{{- end }}
{{- end -}}

{{/* The ${env:NAME} values of the config file, each from its key of the Secret. */}}
{{- define "hookrun.secretEnv" -}}
{{- range $name, $_ := .Values.secrets.env }}
- name: {{ $name }}
  valueFrom: {secretKeyRef: {name: {{ include "hookrun.secretName" $ }}, key: {{ $name }}}}
{{- end }}
{{- end -}}

{{- define "hookrun.kafkaVolume" -}}
{{- $files := include "hookrun.kafkaFiles" . -}}
{{- if $files }}
- name: kafka
  secret:
    secretName: {{ include "hookrun.secretName" . }}
    defaultMode: 0440
    items: {{- $files | trim | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "hookrun.kafkaMount" -}}
{{- if include "hookrun.kafkaFiles" . }}
- {name: kafka, mountPath: /etc/hookrun/kafka, readOnly: true}
{{- end }}
{{- end -}}

{{/* Settings that do not fit together fail the render with the value to fix; the types and
enumerations are in values.schema.json. */}}
{{- define "hookrun.validate" -}}
{{- $s := .Values.secrets -}}
{{- $own := not $s.existingSecret -}}
{{- if include "hookrun.sasl" . }}
{{- if not .Values.kafka.sasl.username }}
{{- fail (printf "kafka.sasl.username: required with kafka.securityProtocol=%s" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and $own (not $s.kafkaSaslPassword) }}
{{- fail (printf "secrets.kafkaSaslPassword: required with kafka.securityProtocol=%s (or name secrets.existingSecret)" .Values.kafka.securityProtocol) }}
{{- end }}
{{- end }}
{{- if and (not (include "hookrun.tls" .)) (or .Values.kafka.tls.ca .Values.kafka.tls.clientCertificate) }}
{{- fail (printf "kafka.tls: set with kafka.securityProtocol=%s, which does not use TLS (SSL or SASL_SSL does)" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and $own .Values.kafka.tls.ca (not $s.kafkaCa) }}
{{- fail "secrets.kafkaCa: required with kafka.tls.ca=true (the CA's PEM text)" }}
{{- end }}
{{- if and $own .Values.kafka.tls.clientCertificate (not (and $s.kafkaCert $s.kafkaKey)) }}
{{- fail "secrets.kafkaCert and secrets.kafkaKey: required with kafka.tls.clientCertificate=true (PEM text)" }}
{{- end }}
{{- if and (ne .Values.status.service.type "ClusterIP") (eq .Values.status.forwardedAllowIps "*") }}
{{- fail (printf "status.forwardedAllowIps: \"*\" would let anyone reaching the %s Service choose the address it is counted as; list the pod CIDR" .Values.status.service.type) }}
{{- end }}
{{- if eq .Values.status.database "postgresql" }}
{{- if and $own (not $s.databaseUrl) }}
{{- fail "secrets.databaseUrl: required with status.database=postgresql" }}
{{- end }}
{{- if and $own (not (regexMatch "^postgres(ql)?://" $s.databaseUrl)) }}
{{- fail "secrets.databaseUrl: must start with postgresql:// (status.database=postgresql)" }}
{{- end }}
{{- else if $s.databaseUrl }}
{{- fail "secrets.databaseUrl: set, but status.database is sqlite (set status.database=postgresql)" }}
{{- end }}
{{- end -}}
