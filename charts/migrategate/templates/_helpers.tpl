{{/*
migrategate helpers.

Every helper takes an explicit dict, never the root context, because a parent chart
includes some of them from its own templates, where .Values is the parent's:

  (dict "values" <this chart's values> "context" <a root context>)

  optional keys:
    "image"    the image to run, e.g. the app container's own "repo:tag" (default: values.image)
    "subchart" the name (or alias) of this chart among the parent's dependencies
               (default "migrategate"); used to find the source files in .Subcharts

From inside this chart: (dict "values" .Values "context" .)
From a parent chart:    (dict "values" .Values.migrategate "context" $)
*/}}

{{/* Chart name: "migrategate" unless nameOverride (not .Chart.Name, so a parent computes the same). */}}
{{- define "migrategate.name" -}}
{{- default "migrategate" .values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource-name prefix: <release>-migrategate, or the release name when it already says migrategate. */}}
{{- define "migrategate.fullname" -}}
{{- if .values.fullnameOverride -}}
{{- .values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "migrategate.name" . -}}
{{- if contains $name .context.Release.Name -}}
{{- .context.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .context.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "migrategate.chart" -}}
{{- printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The one place app.kubernetes.io/* labels come from. Optional "component". */}}
{{- define "migrategate.labels" -}}
helm.sh/chart: {{ include "migrategate.chart" . }}
{{ include "migrategate.selectorLabels" . }}
{{- with .context.Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: {{ include "migrategate.name" . }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- with .values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "migrategate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "migrategate.name" . }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- end -}}

{{/* Names of what the chart creates (or references). */}}
{{- define "migrategate.codeConfigMapName" -}}
{{- printf "%s-code" (include "migrategate.fullname" .) -}}
{{- end -}}

{{- define "migrategate.createSecret" -}}
{{- if and (not .values.database.existingSecret) .values.database.password -}}true{{- end -}}
{{- end -}}

{{- define "migrategate.secretName" -}}
{{- if .values.database.existingSecret -}}
{{- .values.database.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "migrategate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* "true" when a password comes from a Secret (existing or created). */}}
{{- define "migrategate.hasPassword" -}}
{{- $db := .values.database -}}
{{- if or (include "migrategate.createSecret" .) (and $db.existingSecret $db.secretKeys.password) -}}true{{- end -}}
{{- end -}}

{{- define "migrategate.passwordKey" -}}
{{- .values.database.secretKeys.password | default "password" -}}
{{- end -}}

{{/*
The migrategate source files. Inside this chart: .Files; from a parent chart:
.Subcharts.<subchart>.Files (Helm >= 3.7, and v4). Renders "<path>\n" lines, sorted.
*/}}
{{- define "migrategate.sourceFiles" -}}
{{- $files := .context.Files -}}
{{- $sub := .subchart | default "migrategate" -}}
{{- with .context.Subcharts -}}{{- with index . $sub -}}{{- $files = .Files -}}{{- end -}}{{- end -}}
{{- range $path, $_ := $files.Glob "files/migrategate/**.py" }}
{{ $path }}
{{- end -}}
{{- end -}}

{{/* ConfigMap key of a source file: the path under files/migrategate/ with "/" -> "." */}}
{{- define "migrategate.sourceKey" -}}
{{- trimPrefix "files/migrategate/" . | replace "/" "." -}}
{{- end -}}

{{- define "migrategate.sourcePaths" -}}
{{- $paths := compact (splitList "\n" (include "migrategate.sourceFiles" .)) -}}
{{- if not $paths -}}
{{- fail (printf "migrategate: no Python source under files/migrategate/ (chart %s). In a git checkout it is a symlink to src/migrategate: check out with symlinks enabled (git config core.symlinks true), or use a packaged chart. From a parent chart whose dependency has an alias, pass (dict ... \"subchart\" \"<alias>\") to the helpers." .context.Chart.Name) -}}
{{- end -}}
{{- toJson $paths -}}
{{- end -}}

{{/* Image reference: the dict's "image" (a parent's own image), else values.image. */}}
{{- define "migrategate.image" -}}
{{- if .image -}}
{{- .image -}}
{{- else -}}
{{- $img := .values.image -}}
{{- if not $img.repository -}}
{{- fail "migrategate: image.repository is required: set it to the APPLICATION's image (the one holding its migrations), e.g. langgenius/dify-api, with image.tag the app's tag" -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else if $img.tag -}}
{{- printf "%s:%s" $img.repository (toString $img.tag) -}}
{{- else -}}
{{- $img.repository -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Cross-field checks the schema cannot express; messages say what to change. */}}
{{- define "migrategate.validate" -}}
{{- $v := .values -}}
{{- $db := $v.database -}}
{{- if and $db.url (regexMatch "^[^:/]+://[^/@?#]*:[^@/?#]*@" $db.url) -}}
{{- fail "migrategate: database.url must not contain a password (it would be a literal in the pod spec): remove it and set database.password, or database.existingSecret with database.secretKeys.password" -}}
{{- end -}}
{{- if and $db.existingSecret $db.password -}}
{{- fail "migrategate: database.password and database.existingSecret are both set: keep one (the password goes into a chart-created Secret only when existingSecret is empty)" -}}
{{- end -}}
{{- if and $db.secretKeys.url (not $db.existingSecret) -}}
{{- fail "migrategate: database.secretKeys.url needs database.existingSecret (the Secret that holds the URL)" -}}
{{- end -}}
{{- if and $db.secretKeys.url $db.url -}}
{{- fail "migrategate: database.url and database.secretKeys.url are both set: keep one" -}}
{{- end -}}
{{- if and $v.migrations.directory $v.migrations.config -}}
{{- fail "migrategate: migrations.directory and migrations.config are both set: give one (a script directory with env.py, or an alembic.ini)" -}}
{{- end -}}
{{- if and (eq $v.code.source "image") (not $v.code.command) -}}
{{- fail "migrategate: code.source=image needs code.command (e.g. [migrategate])" -}}
{{- end -}}
{{- $envNames := list -}}
{{- range $v.extraEnv }}{{ $envNames = append $envNames .name }}{{ end -}}
{{- $hasUrl := or $db.url $db.secretKeys.url $v.preset $v.extraEnvFrom (has "MIGRATEGATE_DATABASE_URL" $envNames) (has "DATABASE_URL" $envNames) -}}
{{- if not $hasUrl -}}
{{- fail "migrategate: no database settings: set database.url (without password), database.existingSecret with database.secretKeys.url, a preset (e.g. preset: dify with Dify's DB_* variables in extraEnv), or MIGRATEGATE_DATABASE_URL in extraEnv/extraEnvFrom" -}}
{{- end -}}
{{- end -}}

{{/* command: the image's python on the shipped source, or the image's own migrategate. */}}
{{- define "migrategate.command" -}}
{{- if eq .values.code.source "image" -}}
{{- toYaml .values.code.command -}}
{{- else -}}
{{- toYaml (list .values.code.python "-m" "migrategate") -}}
{{- end -}}
{{- end -}}

{{- define "migrategate.upgradeArgs" -}}
{{- $u := .values.upgrade -}}
{{- $args := list "upgrade" "--lock-timeout" (toString $u.lockTimeout) -}}
{{- if not (kindIs "invalid" $u.pgLockTimeout) -}}
{{- $args = concat $args (list "--pg-lock-timeout" (toString $u.pgLockTimeout)) -}}
{{- end -}}
{{- if .values.gate.allowAhead -}}
{{- $args = append $args "--allow-ahead" -}}
{{- end -}}
{{- $args = concat $args ($u.extraArgs | default list) -}}
{{- toYaml $args -}}
{{- end -}}

{{- define "migrategate.waitArgs" -}}
{{- $g := .values.gate -}}
{{- $args := list "wait" "--timeout" (toString $g.timeout) "--interval" (toString $g.interval) -}}
{{- if $g.allowAhead -}}
{{- $args = append $args "--allow-ahead" -}}
{{- end -}}
{{- $args = concat $args ($g.extraArgs | default list) -}}
{{- toYaml $args -}}
{{- end -}}

{{/* Environment shared by every migrategate container. The password is only ever a secretKeyRef or a file. */}}
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
{{- if include "migrategate.hasPassword" . }}
{{- if eq $db.passwordAs "file" }}
- name: MIGRATEGATE_DATABASE_PASSWORD_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" $db.passwordMountPath) (include "migrategate.passwordKey" .) | quote }}
{{- else }}
- name: {{ $db.passwordEnvName }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "migrategate.passwordKey" . }}
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

{{- define "migrategate.volumeMounts" -}}
{{- $v := .values -}}
- name: migrategate-tmp
  mountPath: /tmp
{{- if ne $v.code.source "image" }}
- name: migrategate-code
  mountPath: {{ printf "%s/migrategate" (trimSuffix "/" $v.code.mountPath) }}
  readOnly: true
{{- end }}
{{- if and (include "migrategate.hasPassword" .) (eq $v.database.passwordAs "file") }}
- name: migrategate-database
  mountPath: {{ $v.database.passwordMountPath }}
  readOnly: true
{{- end }}
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Volumes the migrategate containers need: /tmp, the source ConfigMap (with one item per file,
rebuilding the package tree) and the password file. A parent chart includes this in its pod's
volumes next to the initContainer helpers.
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
    {{- range (include "migrategate.sourcePaths" . | fromJsonArray) }}
      - key: {{ include "migrategate.sourceKey" . }}
        path: {{ trimPrefix "files/migrategate/" . }}
    {{- end }}
{{- end }}
{{- if and (include "migrategate.hasPassword" .) (eq $v.database.passwordAs "file") }}
- name: migrategate-database
  secret:
    secretName: {{ include "migrategate.secretName" . }}
    defaultMode: {{ $v.database.passwordFileMode }}
    items:
      - key: {{ include "migrategate.passwordKey" . }}
        path: {{ include "migrategate.passwordKey" . }}
{{- end }}
{{- end -}}

{{/* One container; the dict also carries "name" and "args" (a YAML list string). */}}
{{- define "migrategate.container" -}}
{{- include "migrategate.validate" . -}}
{{- $v := .values -}}
name: {{ .name }}
image: {{ include "migrategate.image" . | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
command:
  {{- include "migrategate.command" . | trim | nindent 2 }}
args:
  {{- .args | trim | nindent 2 }}
env:
  {{- include "migrategate.env" . | trim | nindent 2 }}
{{- with $v.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  {{- include "migrategate.volumeMounts" . | trim | nindent 2 }}
{{- with $v.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.containerSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
terminationMessagePath: /dev/termination-log
terminationMessagePolicy: FallbackToLogsOnError
{{- end -}}

{{/*
initContainer that runs `migrategate upgrade` (one list item). Safe with many replicas: the
database lock lets one pod migrate while the others wait, then verify.
  initContainers:
    {{- include "migrategate.initContainer.upgrade" (dict "values" .Values.migrategate "context" $ "image" "repo:tag") | nindent 8 }}
*/}}
{{- define "migrategate.initContainer.upgrade" -}}
{{- $c := merge (dict "name" "migrategate-upgrade" "args" (include "migrategate.upgradeArgs" .)) . -}}
- {{ include "migrategate.container" $c | nindent 2 | trim }}
{{- end -}}

{{/*
initContainer that runs `migrategate wait`: the app container starts only when the database
is verified at the image's head(s). Reads the database, never the Job object (no RBAC).
*/}}
{{- define "migrategate.initContainer.wait" -}}
{{- $c := merge (dict "name" "migrategate-wait" "args" (include "migrategate.waitArgs" .)) . -}}
- {{ include "migrategate.container" $c | nindent 2 | trim }}
{{- end -}}

{{/* Hash of chart version, app version, values and the shipped source: the Job name suffix. */}}
{{- define "migrategate.jobSuffix" -}}
{{- if .values.job.nameSuffixOverride -}}
{{- .values.job.nameSuffixOverride -}}
{{- else -}}
{{- $source := "" -}}
{{- if ne .values.code.source "image" -}}
{{- range (include "migrategate.sourcePaths" . | fromJsonArray) -}}
{{- $source = printf "%s%s=%s;" $source . ($.context.Files.Get . | sha256sum) -}}
{{- end -}}
{{- end -}}
{{- printf "%s|%s|%s|%s" .context.Chart.Version (toString .context.Chart.AppVersion) (toJson .values) (sha256sum $source) | sha256sum | trunc 8 -}}
{{- end -}}
{{- end -}}

{{- define "migrategate.jobName" -}}
{{- $base := include "migrategate.fullname" . | trunc 44 | trimSuffix "-" -}}
{{- if .values.job.hook.enabled -}}
{{- printf "%s-migrate" $base -}}
{{- else -}}
{{- printf "%s-migrate-%s" $base (include "migrategate.jobSuffix" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Hook annotations for the ConfigMap and Secret in hook mode: they must exist before the Job. */}}
{{- define "migrategate.hookAnnotations" -}}
{{- if .values.job.hook.enabled -}}
helm.sh/hook: {{ join "," .values.job.hook.events }}
helm.sh/hook-weight: {{ sub (int .values.job.hook.weight) 10 | toString | quote }}
helm.sh/hook-delete-policy: before-hook-creation
{{- end -}}
{{- end -}}
