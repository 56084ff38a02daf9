{{/*
Names, labels and the pieces every workload shares. The five services are one table
(`ekiben.services`): their names, ports, whether they are on the bus and whether they talk to
the Kubernetes API. Each service's values live under its own key (gateway, registry, builder,
deployer, dashboard) and fall back to `defaults`.
*/}}

{{- define "ekiben.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ekiben.fullname" -}}
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

{{/* The service table: name, env prefix, bus (NATS + PostgreSQL), kube (API access). */}}
{{- define "ekiben.services" -}}
gateway: {prefix: EKIBEN_GATEWAY_, bus: true, kube: false, public: true}
registry: {prefix: EKIBEN_REGISTRY_, bus: true, kube: false, public: false}
builder: {prefix: EKIBEN_BUILDER_, bus: true, kube: true, public: false}
deployer: {prefix: EKIBEN_DEPLOYER_, bus: true, kube: true, public: false}
dashboard: {prefix: EKIBEN_DASHBOARD_, bus: false, kube: false, public: true}
{{- end -}}

{{- define "ekiben.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ekiben.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "gateway"). */}}
{{- define "ekiben.labels" -}}
{{ include "ekiben.selectorLabels" . }}
app.kubernetes.io/part-of: ekiben
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ekiben.componentName" -}}
{{- printf "%s-%s" (include "ekiben.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The one image of every service, by digest when given. */}}
{{- define "ekiben.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* A service's value: its own key first, then `defaults`. (dict "root" $ "component" c "key" k) */}}
{{- define "ekiben.value" -}}
{{- $own := index .root.Values .component -}}
{{- $value := index $own .key -}}
{{- if or (kindIs "invalid" $value) (and (kindIs "map" $value) (empty $value)) -}}
{{- $value = index .root.Values.defaults .key -}}
{{- end -}}
{{- toYaml $value -}}
{{- end -}}

{{/* Namespaces a controller watches: its list, or the release namespace. */}}
{{- define "ekiben.watchNamespaces" -}}
{{- $own := index .root.Values .component -}}
{{- $list := $own.watchNamespaces | default (list .root.Release.Namespace) -}}
{{- toJson $list -}}
{{- end -}}

{{- define "ekiben.watchesAll" -}}
{{- $own := index .root.Values .component -}}
{{- if has "*" ($own.watchNamespaces | default list) }}true{{ end -}}
{{- end -}}

{{/* Where a controller keeps its Lease (KUBE__NAMESPACE): the first watched namespace. */}}
{{- define "ekiben.homeNamespace" -}}
{{- $own := index .root.Values .component -}}
{{- $first := first ($own.watchNamespaces | default (list .root.Release.Namespace)) -}}
{{- if eq $first "*" }}{{ .root.Release.Namespace }}{{ else }}{{ $first }}{{ end -}}
{{- end -}}

{{/* The pod's security context: the image's unprivileged user, RuntimeDefault seccomp. */}}
{{- define "ekiben.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ekiben.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ekiben.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "%s: name the Secret" .name) .secret | quote }}
      key: {{ .key | quote }}
{{- end -}}

{{/* What every service on the bus gets: NATS, PostgreSQL. (dict "root" $ "prefix" p) */}}
{{- define "ekiben.busEnv" -}}
{{- $v := .root.Values -}}
{{- if $v.nats.urlSecret.name }}
{{ include "ekiben.secretEnv" (dict "name" (printf "%sNATS__URL" .prefix) "secret" $v.nats.urlSecret.name "key" $v.nats.urlSecret.key) }}
{{- else }}
- name: {{ .prefix }}NATS__URL
  value: {{ required "nats.url is required" $v.nats.url | quote }}
{{- end }}
{{ include "ekiben.secretEnv" (dict "name" (printf "%sPOSTGRES__DSN" .prefix) "secret" $v.postgres.existingSecret "key" $v.postgres.dsnKey) }}
- name: {{ .prefix }}POSTGRES__POOL_MAX_SIZE
  value: {{ $v.postgres.poolMaxSize | quote }}
{{- end -}}

{{- define "ekiben.telemetryEnv" -}}
{{- $t := .root.Values.telemetry -}}
- name: {{ .prefix }}TELEMETRY__LOG_LEVEL
  value: {{ $t.logLevel | quote }}
- name: {{ .prefix }}TELEMETRY__LOG_JSON
  value: "true"
- name: {{ .prefix }}TELEMETRY__SAMPLE_RATIO
  value: {{ $t.sampleRatio | quote }}
{{- if $t.otlpEndpoint }}
- name: {{ .prefix }}TELEMETRY__OTLP_ENDPOINT
  value: {{ $t.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{/* The image registry credentials the builder reads. */}}
{{- define "ekiben.registryEnv" -}}
{{- $r := .root.Values.imageRegistry -}}
{{- with $r.url }}
- name: EKIBEN_BUILDER_REGISTRY__URL
  value: {{ . | quote }}
{{- end }}
- name: EKIBEN_BUILDER_REGISTRY__REPOSITORY_PREFIX
  value: {{ $r.repositoryPrefix | quote }}
- name: EKIBEN_BUILDER_REGISTRY__INSECURE
  value: {{ $r.insecure | quote }}
{{- if and $r.dockerConfigSecret $r.basicAuthSecret.name }}
{{- fail "imageRegistry: give dockerConfigSecret or basicAuthSecret, not both" }}
{{- end }}
{{- if $r.dockerConfigSecret }}
- name: EKIBEN_BUILDER_REGISTRY__DOCKER_CONFIG
  value: /etc/ekiben/registry/config.json
{{- else if $r.basicAuthSecret.name }}
{{ include "ekiben.secretEnv" (dict "name" "EKIBEN_BUILDER_REGISTRY__USERNAME" "secret" $r.basicAuthSecret.name "key" $r.basicAuthSecret.usernameKey) }}
{{ include "ekiben.secretEnv" (dict "name" "EKIBEN_BUILDER_REGISTRY__PASSWORD" "secret" $r.basicAuthSecret.name "key" $r.basicAuthSecret.passwordKey) }}
{{- end }}
{{- end -}}

{{/* What only one service gets. (dict "root" $ "component" c) */}}
{{- define "ekiben.serviceEnv" -}}
{{- $v := .root.Values -}}
{{- $full := include "ekiben.fullname" .root -}}
{{- if eq .component "gateway" }}
- name: EKIBEN_GATEWAY_TRANSFER_STRATEGY
  value: {{ $v.gateway.transferStrategy | quote }}
{{- else if eq .component "registry" }}
{{- with $v.s3.endpointUrl }}
- name: EKIBEN_REGISTRY_S3__ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $v.s3.publicEndpointUrl }}
- name: EKIBEN_REGISTRY_S3__PUBLIC_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: EKIBEN_REGISTRY_S3__REGION
  value: {{ $v.s3.region | quote }}
- name: EKIBEN_REGISTRY_S3__BUCKET
  value: {{ required "s3.bucket is required" $v.s3.bucket | quote }}
{{ include "ekiben.secretEnv" (dict "name" "EKIBEN_REGISTRY_S3__ACCESS_KEY_ID" "secret" $v.s3.existingSecret "key" $v.s3.accessKeyIdKey) }}
{{ include "ekiben.secretEnv" (dict "name" "EKIBEN_REGISTRY_S3__SECRET_ACCESS_KEY" "secret" $v.s3.existingSecret "key" $v.s3.secretAccessKeyKey) }}
{{- else if eq .component "builder" }}
- name: EKIBEN_BUILDER_KUBE__NAMESPACE
  value: {{ include "ekiben.homeNamespace" . | quote }}
- name: EKIBEN_BUILDER_KUBE__WATCH_NAMESPACES
  value: {{ include "ekiben.watchNamespaces" . | quote }}
- name: EKIBEN_BUILDER_CONTAINERS__STATE_DIR
  value: /var/lib/ekiben/builder
{{ include "ekiben.registryEnv" . }}
- name: EKIBEN_BUILDER_BACKEND
  value: {{ $v.builder.backend | quote }}
{{- if eq $v.builder.backend "kubernetes" }}
{{- $img := $v.builder.buildImage }}
- name: EKIBEN_BUILDER_JOB__IMAGE
  value: {{ if $img.digest }}{{ printf "%s@%s" $img.repository $img.digest | quote }}{{ else }}{{ printf "%s:%s" $img.repository $img.tag | quote }}{{ end }}
{{- with $v.imageRegistry.dockerConfigSecret }}
- name: EKIBEN_BUILDER_JOB__REGISTRY_SECRET
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- else if eq .component "deployer" }}
- name: EKIBEN_DEPLOYER_KUBE__NAMESPACE
  value: {{ include "ekiben.homeNamespace" . | quote }}
- name: EKIBEN_DEPLOYER_KUBE__WATCH_NAMESPACES
  value: {{ include "ekiben.watchNamespaces" . | quote }}
{{- with $v.imageRegistry.dockerConfigSecret }}
- name: EKIBEN_DEPLOYER_IMAGE_PULL_SECRET
  value: {{ . | quote }}
{{- end }}
{{- else if eq .component "dashboard" }}
- name: EKIBEN_DASHBOARD_GATEWAY_URL
  value: {{ printf "http://%s-gateway:%v" $full $v.gateway.service.port | quote }}
{{- $public := $v.dashboard.publicGatewayUrl }}
{{- if and (not $public) $v.ingress.gateway.enabled $v.ingress.gateway.hosts }}
{{- $public = printf "%s://%s" (ternary "https" "http" (gt (len $v.ingress.gateway.tls) 0)) (first $v.ingress.gateway.hosts) }}
{{- end }}
{{- with $public }}
- name: EKIBEN_DASHBOARD_PUBLIC_GATEWAY_URL
  value: {{ . | quote }}
{{- end }}
- name: EKIBEN_DASHBOARD_SERVICE_URLS
  value: {{ dict "gateway" (printf "http://%s-gateway:%v" $full $v.gateway.service.port) "registry" (printf "http://%s-registry:%v" $full $v.registry.service.port) "builder" (printf "http://%s-builder:%v" $full $v.builder.service.port) "deployer" (printf "http://%s-deployer:%v" $full $v.deployer.service.port) | toJson | quote }}
{{- end }}
{{- end -}}

{{/* A NetworkPolicy egress rule from {to, ports} values: no `to` means any destination. */}}
{{- define "ekiben.egressRule" -}}
- ports:
    {{- range .rule.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .rule.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
