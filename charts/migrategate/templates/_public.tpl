{{/*
migrategate's PUBLIC helpers: the templates a parent (umbrella) chart includes. They are
an API: their names, their argument and what they render stay stable across minor chart
versions, and charts/migrategate/README.md ("Public helpers") documents each one.
Everything in _internal.tpl (names "migrategate.internal.*") may change in any release:
don't include those from another chart.

Every public helper takes one explicit dict, never a root context, because .Values in a
parent chart is the parent's:

  (dict "values" <this chart's values> "context" <a root context>)

  optional keys:
    "image"    the image to run, e.g. the app container's own "repo:tag"
               (default: values.image, with values.global.imageRegistry)
    "subchart" the name (or alias) of this chart among the parent's dependencies
               (default "migrategate"); used to find the shipped source in .Subcharts

From inside this chart: (dict "values" .Values "context" .)
From a parent chart:    (dict "values" .Values.migrategate "context" $ "image" $appImage)

The initContainers run as the app pod's user. containerSecurityContext has no runAsUser;
set gate.securityContext.runAsUser when the parent sets its user per container (e.g. Dify's
chart: pod fsGroup only, app container runAsUser 1001) and the image's USER is root or a
name: with runAsNonRoot the kubelet cannot check a user name and refuses to start the
container (CreateContainerConfigError "non-numeric user"), and root is refused outright.
*/}}

{{/*
migrategate.initContainer.upgrade: one initContainers list item ("migrategate-upgrade")
running `migrategate upgrade`. Safe with many replicas: the database lock lets one pod
migrate while the others wait, then verify. Set job.enabled=false when you use it.
Uses gate.securityContext / gate.resources (over containerSecurityContext / resources).

  initContainers:
    {{- include "migrategate.initContainer.upgrade" $mg | nindent 8 }}
*/}}
{{- define "migrategate.initContainer.upgrade" -}}
{{- $c := merge (dict "name" "migrategate-upgrade" "role" "gate" "args" (include "migrategate.internal.upgradeArgs" .)) . -}}
- {{ include "migrategate.internal.container" $c | nindent 2 | trim }}
{{- end -}}

{{/*
migrategate.initContainer.wait: one initContainers list item ("migrategate-wait") running
`migrategate wait`: the app container starts only when the database is verified at the
image's head(s). Reads the database, never the Job object (no RBAC). Exit 10 after
gate.timeout (the kubelet then restarts it). Uses gate.securityContext / gate.resources.
*/}}
{{- define "migrategate.initContainer.wait" -}}
{{- $c := merge (dict "name" "migrategate-wait" "role" "gate" "args" (include "migrategate.internal.waitArgs" .)) . -}}
- {{ include "migrategate.internal.container" $c | nindent 2 | trim }}
{{- end -}}

{{/*
migrategate.volumes: the pod volumes those containers mount, as list items: /tmp
("migrategate-tmp"), the source ConfigMap ("migrategate-code", one item per file,
rebuilding the package tree) and the password file ("migrategate-database", with
database.passwordAs=file).

  volumes:
    {{- include "migrategate.volumes" $mg | nindent 8 }}
*/}}
{{- define "migrategate.volumes" -}}
{{- $v := .values -}}
- name: migrategate-tmp
  emptyDir:
    {{- with $v.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- else }} {}
    {{- end }}
{{- if ne $v.code.source "image" }}
- name: migrategate-code
  configMap:
    name: {{ include "migrategate.codeConfigMapName" . }}
    defaultMode: 292  # 0444
    items:
    {{- range (include "migrategate.internal.sourcePaths" . | fromJsonArray) }}
      - key: {{ include "migrategate.internal.sourceKey" . }}
        path: {{ trimPrefix "files/migrategate/" . }}
    {{- end }}
{{- end }}
{{- if and (include "migrategate.internal.hasPassword" .) (eq $v.database.passwordAs "file") }}
- name: migrategate-database
  secret:
    secretName: {{ include "migrategate.secretName" . }}
    defaultMode: {{ $v.database.passwordFileMode }}
    items:
      - key: {{ include "migrategate.internal.passwordKey" . }}
        path: {{ include "migrategate.internal.passwordKey" . }}
{{- end }}
{{- end -}}

{{/*
migrategate.env: the env list (items) of a migrategate container, for a custom container.
The password is only ever a secretKeyRef or a mounted file.
*/}}
{{- define "migrategate.env" -}}
{{- $v := .values -}}
{{- $db := $v.database -}}
{{- $secret := include "migrategate.secretName" . -}}
{{- if $db.url }}
- name: MIGRATEGATE_DATABASE_URL
  value: {{ $db.url | quote }}
{{- else if $db.secretKeys.url }}
- name: MIGRATEGATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $db.secretKeys.url }}
{{- end }}
{{- if include "migrategate.internal.hasPassword" . }}
{{- if eq $db.passwordAs "file" }}
- name: MIGRATEGATE_DATABASE_PASSWORD_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" $db.passwordMountPath) (include "migrategate.internal.passwordKey" .) | quote }}
{{- else }}
- name: {{ $db.passwordEnvName }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "migrategate.internal.passwordKey" . }}
{{- end }}
{{- end }}
{{- with $v.preset }}
- name: MIGRATEGATE_PRESET
  value: {{ . | quote }}
{{- end }}
{{- with $v.migrations.directory }}
- name: MIGRATEGATE_MIGRATIONS
  value: {{ . | quote }}
{{- end }}
{{- with $v.migrations.config }}
- name: MIGRATEGATE_CONFIG
  value: {{ . | quote }}
{{- end }}
{{- with $v.migrations.appRoot }}
- name: MIGRATEGATE_APP_ROOT
  value: {{ . | quote }}
{{- end }}
{{- with $v.migrations.target }}
- name: MIGRATEGATE_TARGET
  value: {{ . | quote }}
{{- end }}
{{- with $v.migrations.expectTables }}
- name: MIGRATEGATE_EXPECT_TABLES
  value: {{ join "," . | quote }}
{{- end }}
{{- with $v.migrations.versionTable }}
- name: MIGRATEGATE_VERSION_TABLE
  value: {{ . | quote }}
{{- end }}
{{- with $v.migrations.versionTableSchema }}
- name: MIGRATEGATE_VERSION_TABLE_SCHEMA
  value: {{ . | quote }}
{{- end }}
{{- with $v.lockName }}
- name: MIGRATEGATE_LOCK_NAME
  value: {{ . | quote }}
{{- end }}
{{- with $v.history }}
{{- if not .enabled }}
- name: MIGRATEGATE_NO_HISTORY
  value: "1"
{{- end }}
{{- with .table }}
- name: MIGRATEGATE_HISTORY_TABLE
  value: {{ . | quote }}
{{- end }}
{{- with .reader }}
- name: MIGRATEGATE_HISTORY_READER
  value: {{ . | quote }}
{{- end }}
{{- if .strictChecksums }}
- name: MIGRATEGATE_STRICT_CHECKSUMS
  value: "1"
{{- end }}
{{- if not .resume }}
- name: MIGRATEGATE_NO_RESUME
  value: "1"
{{- end }}
{{- end }}
- name: MIGRATEGATE_IMAGE
  value: {{ include "migrategate.internal.image" . | quote }}
{{- if eq ($v.logFormat | default "text") "json" }}
- name: MIGRATEGATE_LOG_FORMAT
  value: "json"
{{- end }}
- name: MIGRATEGATE_CONNECT_TIMEOUT
  value: {{ toString $v.connectTimeout | quote }}
- name: MIGRATEGATE_TERMINATION_LOG
  value: /dev/termination-log
{{- if ne $v.code.source "image" }}
- name: PYTHONPATH
  value: {{ join ":" (concat (list $v.code.mountPath) ($v.code.extraPythonPath | default list)) | quote }}
{{- end }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: PYTHONUNBUFFERED
  value: "1"
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* migrategate.volumeMounts: the volumeMounts list (items) of a migrategate container. */}}
{{- define "migrategate.volumeMounts" -}}
{{- $v := .values -}}
- name: migrategate-tmp
  mountPath: /tmp
{{- if ne $v.code.source "image" }}
- name: migrategate-code
  mountPath: {{ printf "%s/migrategate" (trimSuffix "/" $v.code.mountPath) }}
  readOnly: true
{{- end }}
{{- if and (include "migrategate.internal.hasPassword" .) (eq $v.database.passwordAs "file") }}
- name: migrategate-database
  mountPath: {{ $v.database.passwordMountPath }}
  readOnly: true
{{- end }}
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* migrategate.fullname: the resource-name prefix, <release>-migrategate (or the overrides). */}}
{{- define "migrategate.fullname" -}}
{{- $full := "" -}}
{{- if .values.fullnameOverride -}}
{{- include "migrategate.internal.checkName" (dict "key" "fullnameOverride" "value" .values.fullnameOverride) -}}
{{- $full = .values.fullnameOverride -}}
{{- else -}}
{{- $name := include "migrategate.name" . -}}
{{- if contains $name .context.Release.Name -}}
{{- $full = .context.Release.Name -}}
{{- else -}}
{{- $full = printf "%s-%s" .context.Release.Name $name -}}
{{- end -}}
{{- end -}}
{{- include "migrategate.internal.truncName" (dict "name" $full "max" 63) -}}
{{- end -}}

{{/* migrategate.name: "migrategate" unless nameOverride (not .Chart.Name, so a parent computes the same). */}}
{{- define "migrategate.name" -}}
{{- include "migrategate.internal.checkName" (dict "key" "nameOverride" "value" .values.nameOverride) -}}
{{- include "migrategate.internal.truncName" (dict "name" (default "migrategate" .values.nameOverride) "max" 63) -}}
{{- end -}}

{{/* migrategate.secretName: the Secret holding the password/URL (existing or chart-created). */}}
{{- define "migrategate.secretName" -}}
{{- if .values.database.existingSecret -}}
{{- .values.database.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "migrategate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* migrategate.codeConfigMapName: the ConfigMap holding migrategate's source. */}}
{{- define "migrategate.codeConfigMapName" -}}
{{- printf "%s-code" (include "migrategate.fullname" .) -}}
{{- end -}}
