{{/*
migrategate's INTERNAL helpers ("migrategate.internal.*"): used by this chart's own
templates and by the public helpers in _public.tpl. Not an API: names, arguments and
output may change in any release. A parent chart includes only what _public.tpl defines.
They take the same dict as the public helpers: (dict "values" ... "context" ...).
*/}}

{{- define "migrategate.internal.chart" -}}
{{- printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
A name cut to "max" characters without a trailing '-' or '.' (a DNS-1123 subdomain ends
with a letter or digit; trimSuffix "-" removed one '-' and no '.').
*/}}
{{- define "migrategate.internal.truncName" -}}
{{- regexReplaceAll "[-.]+$" (trunc (int .max) .name) "" -}}
{{- end -}}

{{/*
Fails unless "value" (named "key") is empty or a DNS-1123 subdomain of at most 63
characters: it goes into resource names (and, as nameOverride, into label values).
*/}}
{{- define "migrategate.internal.checkName" -}}
{{- $value := toString (.value | default "") -}}
{{- if and $value (or (gt (len $value) 63) (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" $value))) -}}
{{- $hint := regexReplaceAll "[^a-z0-9.]+" (lower $value) "-" -}}
{{- $hint = regexReplaceAll "[-.]*\\.[-.]*" $hint "." | trunc 63 | trimAll "-." -}}
{{- fail (printf "migrategate: %s %q is not a valid name: it goes into resource names and labels, which take at most 63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, a '.' only between two of them (a DNS-1123 subdomain)%s" .key $value (ternary (printf ", e.g. %q" $hint) "" (ne $hint ""))) -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: these two always keep the chart's values. */}}
{{- define "migrategate.internal.selectorLabels" -}}
{{- toJson (dict "app.kubernetes.io/name" (include "migrategate.name" .) "app.kubernetes.io/instance" .context.Release.Name) -}}
{{- end -}}

{{/*
Labels of a resource as ONE dict (JSON), so a key is never emitted twice. Precedence:
selector labels > "extra" (e.g. podLabels) > commonLabels > the chart's other labels.
Optional keys: "component", "extra" (a dict).
*/}}
{{- define "migrategate.internal.labelDict" -}}
{{- $chart := dict "helm.sh/chart" (include "migrategate.internal.chart" .) "app.kubernetes.io/managed-by" .context.Release.Service "app.kubernetes.io/part-of" (include "migrategate.name" .) -}}
{{- with .context.Chart.AppVersion }}{{ $_ := set $chart "app.kubernetes.io/version" (toString .) }}{{ end -}}
{{- with .component }}{{ $_ := set $chart "app.kubernetes.io/component" . }}{{ end -}}
{{- include "migrategate.internal.checkLabels" (dict "key" "commonLabels" "labels" .values.commonLabels) -}}
{{- include "migrategate.internal.checkLabels" (dict "key" "podLabels" "labels" .values.podLabels) -}}
{{- $labels := include "migrategate.internal.selectorLabels" . | fromJson -}}
{{- $labels = merge $labels (deepCopy (.extra | default dict)) (deepCopy (.values.commonLabels | default dict)) $chart -}}
{{- toJson $labels -}}
{{- end -}}

{{/*
Fails unless every key of "labels" (the value named "key") is a label key and every value a
label value, as the API server checks them: key [prefix/]name, prefix a DNS-1123 subdomain
of at most 253, name at most 63 letters, digits, '-', '_', '.' starting and ending with a
letter or digit; value the same as a name, or empty. With "keysOnly" (annotations) only
the keys are checked.
*/}}
{{- define "migrategate.internal.checkLabels" -}}
{{- $where := .key -}}
{{- $keysOnly := .keysOnly -}}
{{- range $k, $value := .labels | default dict -}}
{{- $name := $k -}}
{{- $prefix := "" -}}
{{- if contains "/" $k }}{{ $prefix = regexReplaceAll "/[^/]*$" $k "" }}{{ $name = regexReplaceAll "^.*/" $k "" }}{{ end -}}
{{- if or (not (regexMatch "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$" $name)) (gt (len $name) 63) (and (contains "/" $k) (or (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" $prefix)) (gt (len $prefix) 253))) -}}
{{- fail (printf "migrategate: %s %q is not a valid %s key: [prefix/]name, the name at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; the optional prefix a lowercase DNS subdomain (e.g. example.com/team)" $where $k (ternary "annotation" "label" (eq $keysOnly true))) -}}
{{- end -}}
{{- if not $keysOnly -}}
{{- $v := toString $value -}}
{{- if or (gt (len $v) 63) (not (regexMatch "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$" $v)) -}}
{{- $hint := regexReplaceAll "[^-A-Za-z0-9_.]+" $v "-" | trunc 63 | trimAll "-_." -}}
{{- fail (printf "migrategate: %s %q: %q is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (or empty), e.g. %q; put free text in an annotation" $where $k $v $hint) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The labels dict as YAML (a mapping body). */}}
{{- define "migrategate.internal.labels" -}}
{{- include "migrategate.internal.labelDict" . | fromJson | toYaml -}}
{{- end -}}

{{/*
metadata.annotations body of a resource, merged as one dict: the chart's own (hook
annotations) > "extra" (e.g. job.annotations) > commonAnnotations. Empty when none.
Optional keys: "extra", "own" (dicts).
*/}}
{{- define "migrategate.internal.annotations" -}}
{{- range $key, $a := dict "commonAnnotations" .values.commonAnnotations "podAnnotations" .values.podAnnotations "job.annotations" .values.job.annotations -}}
{{- include "migrategate.internal.checkLabels" (dict "key" $key "labels" $a "keysOnly" true) -}}
{{- end -}}
{{- $a := merge (deepCopy (.own | default dict)) (deepCopy (.extra | default dict)) (deepCopy (.values.commonAnnotations | default dict)) -}}
{{- if $a }}{{ toYaml $a }}{{ end -}}
{{- end -}}

{{- define "migrategate.internal.createSecret" -}}
{{- if and (not .values.database.existingSecret) .values.database.password -}}true{{- end -}}
{{- end -}}

{{/* "true" when a password comes from a Secret (existing or created). */}}
{{- define "migrategate.internal.hasPassword" -}}
{{- $db := .values.database -}}
{{- if or (include "migrategate.internal.createSecret" .) (and $db.existingSecret $db.secretKeys.password) -}}true{{- end -}}
{{- end -}}

{{- define "migrategate.internal.passwordKey" -}}
{{- .values.database.secretKeys.password | default "password" -}}
{{- end -}}

{{/*
The migrategate source files a pod runs (all but the post-renderer, inject.py). Inside
this chart: .Files; from a parent chart:
.Subcharts.<subchart>.Files (Helm >= 3.7, and v4). Renders "<path>\n" lines, sorted.
*/}}
{{- define "migrategate.internal.sourceFiles" -}}
{{- $files := .context.Files -}}
{{- $sub := .subchart | default "migrategate" -}}
{{- with .context.Subcharts -}}{{- with index . $sub -}}{{- $files = .Files -}}{{- end -}}{{- end -}}
{{- range $path, $_ := $files.Glob "files/migrategate/**.py" }}
{{- /* inject.py is the post-renderer: it runs where helm runs, never in a pod */}}
{{- if ne $path "files/migrategate/inject.py" }}
{{ $path }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* ConfigMap key of a source file: the path under files/migrategate/ with "/" -> "." */}}
{{- define "migrategate.internal.sourceKey" -}}
{{- trimPrefix "files/migrategate/" . | replace "/" "." -}}
{{- end -}}

{{- define "migrategate.internal.sourcePaths" -}}
{{- $paths := compact (splitList "\n" (include "migrategate.internal.sourceFiles" .)) -}}
{{- if not $paths -}}
{{- fail (printf "migrategate: no Python source under files/migrategate/ (chart %s). In a git checkout it is a symlink to src/migrategate: check out with symlinks enabled (git config core.symlinks true), or use a packaged chart. From a parent chart whose dependency has an alias, pass (dict ... \"subchart\" \"<alias>\") to the helpers." .context.Chart.Name) -}}
{{- end -}}
{{- toJson $paths -}}
{{- end -}}

{{/*
Image reference: the dict's "image" (a parent's own image), else values.image. The parts
are checked against the reference grammar the kubelet parses (distribution/reference): a
reference it cannot parse leaves the pod in InvalidImageName.
*/}}
{{- define "migrategate.internal.image" -}}
{{- if .image -}}
{{- .image -}}
{{- else -}}
{{- $img := .values.image -}}
{{- if not $img.repository -}}
{{- fail "migrategate: image.repository is required: set it to the APPLICATION's image (the one holding its migrations), e.g. langgenius/dify-api, with image.tag the app's tag" -}}
{{- end -}}
{{- $dc := "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])" -}}
{{- $domain := printf "(?:%s(?:\\.%s)*(?::[0-9]+)?|\\[[0-9A-Fa-f:]+\\](?::[0-9]+)?)" $dc $dc -}}
{{- $pc := "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*" -}}
{{- $tagRe := "[\\w][\\w.-]{0,127}" -}}
{{- $digestRe := "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}" -}}
{{- $repo := toString $img.repository -}}
{{- $tag := toString ($img.tag | default "") -}}
{{- $digest := toString ($img.digest | default "") -}}
{{- if or (contains "@" $tag) (hasPrefix "sha256:" $tag) (regexMatch (printf "^%s$" $digestRe) $tag) -}}
{{- fail (printf "migrategate: image.tag holds a digest (%q): put the digest (sha256:...) in image.digest, which wins over the tag, and set image.tag to the tag it stands for or \"\"" $tag) -}}
{{- end -}}
{{- if and (contains "@" $repo) (or $tag $digest) -}}
{{- fail (printf "migrategate: image.repository holds a digest (%q) and image.%s is set too, which makes an image reference the kubelet cannot parse: put the digest in image.digest and only the repository in image.repository" $repo (ternary "digest" "tag" (ne $digest ""))) -}}
{{- end -}}
{{- if and $tag (not $digest) (regexMatch ":[^/]*$" $repo) -}}
{{- fail (printf "migrategate: image.repository holds a tag (%q) and image.tag is set too (%q), which makes an image reference the kubelet cannot parse: keep only the repository in image.repository and the tag in image.tag" $repo $tag) -}}
{{- end -}}
{{- if and $tag (not (regexMatch (printf "^%s$" $tagRe) $tag)) -}}
{{- fail (printf "migrategate: image.tag %q is not a valid image tag: at most 128 letters, digits, '_', '.' or '-', not starting with '.' or '-' (quote numbers in YAML: tag: \"1.10\")" $tag) -}}
{{- end -}}
{{- if not (regexMatch (printf "^(?:%s/)?%s(?:/%s)*(?::%s)?(?:@%s)?$" $domain $pc $pc $tagRe $digestRe) $repo) -}}
{{- fail (printf "migrategate: image.repository %q is not a valid image repository: [registry[:port]/]path, the path's components lowercase letters and digits separated by '.', '_', '__' or '-', joined by '/' (no spaces; a tag goes in image.tag, a digest in image.digest)" $repo) -}}
{{- end -}}
{{- $registry := toString ($img.registry | default "") -}}
{{- $registryKey := "image.registry" -}}
{{- with .values.global }}{{ with .imageRegistry }}{{ $registry = toString . }}{{ $registryKey = "global.imageRegistry" }}{{ end }}{{ end -}}
{{- if and $registry (not (regexMatch (printf "^%s(?:/%s)*/?$" $domain $pc) $registry)) -}}
{{- fail (printf "migrategate: %s %q is not a valid registry: host[:port] (a numeric port), optionally followed by /path with lowercase path components, e.g. registry.example.com:5000/mirror" $registryKey $registry) -}}
{{- end -}}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end -}}
{{- $ref := $repo -}}
{{- if $digest -}}
{{- $ref = printf "%s@%s" $repo $digest -}}
{{- else if $tag -}}
{{- $ref = printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- $name := regexReplaceAll "(?::[^:/@]*)?(?:@.*)?$" $ref "" -}}
{{- if or (gt (len $name) 255) (not (regexMatch (printf "^(?:%s/)?%s(?:/%s)*(?::%s)?(?:@%s)?$" $domain $pc $pc $tagRe $digestRe) $ref)) -}}
{{- fail (printf "migrategate: the image reference %q (from %s, image.repository, image.tag/image.digest) is not one the kubelet can parse (and the repository name is at most 255 characters): fix those values" $ref $registryKey) -}}
{{- end -}}
{{- $ref -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets items: imagePullSecrets + global.imagePullSecrets (names or {name}), deduplicated. */}}
{{- define "migrategate.internal.imagePullSecrets" -}}
{{- $names := list -}}
{{- $global := list -}}
{{- with .values.global }}{{ $global = .imagePullSecrets | default list }}{{ end -}}
{{- range concat (.values.imagePullSecrets | default list) $global -}}
{{- $name := . -}}
{{- if kindIs "map" . }}{{ $name = .name }}{{ end -}}
{{- if and $name (not (has $name $names)) }}{{ $names = append $names $name }}{{ end -}}
{{- end -}}
{{- range $names }}
- name: {{ . }}
{{- end -}}
{{- end -}}

{{/* Cross-field checks the schema cannot express; messages say what to change. */}}
{{- define "migrategate.internal.validate" -}}
{{- $v := .values -}}
{{- $db := $v.database -}}
{{- /* SQLAlchemy's reading (make_url): the user name runs to the first ':' or '/', the
password from that ':' to the first '@' after it, whatever it holds ('/', '?', '#'...). */ -}}
{{- if and $db.url (regexMatch "^[^:/]*://[^:/]*:[^@]*@" $db.url) -}}
{{- fail "migrategate: database.url must not contain a password (SQLAlchemy reads everything from the ':' after the user name to the next '@' as one, and it would be a literal in the pod spec): remove it and set database.password, or database.existingSecret with database.secretKeys.password" -}}
{{- end -}}
{{- /* A password anywhere else in the container spec would be a literal too (README: "only
via secretKeyRef or a mounted file"). A URL with one: "<scheme>://<user>:<password>@". */ -}}
{{- $urlPassword := "://[^:/]*:[^@]*@" -}}
{{- $instead := "give the URL without it (database.url, or a whole URL in a Secret: database.existingSecret with database.secretKeys.url) and the password through database.existingSecret or database.password" -}}
{{- range $key, $list := dict "upgrade.extraArgs" $v.upgrade.extraArgs "gate.extraArgs" $v.gate.extraArgs "code.command" $v.code.command -}}
{{- range $i, $arg := $list -}}
{{- if regexMatch $urlPassword (toString $arg) -}}
{{- fail (printf "migrategate: %s[%d] holds a URL with a password, which would be a literal in the pod spec (and in `kubectl describe`): remove it; %s" $key $i $instead) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $i, $e := $v.extraEnv -}}
{{- if and (hasKey $e "value") (not (kindIs "invalid" $e.value)) -}}
{{- $value := toString $e.value -}}
{{- $name := toString $e.name -}}
{{- $isPassword := and (contains "PASSWORD" (upper $name)) (not (hasSuffix "_FILE" (upper $name))) -}}
{{- if or (and $value (or $isPassword (eq $name $db.passwordEnvName))) (regexMatch $urlPassword $value) -}}
{{- fail (printf "migrategate: extraEnv[%d] (%s) has a literal value holding a password, which would be in the pod spec (and in `kubectl describe`): take it from a Secret with valueFrom.secretKeyRef instead of value, or %s" $i $name $instead) -}}
{{- end -}}
{{- end -}}
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
{{- define "migrategate.internal.command" -}}
{{- if eq .values.code.source "image" -}}
{{- toYaml .values.code.command -}}
{{- else -}}
{{- toYaml (list .values.code.python "-m" "migrategate") -}}
{{- end -}}
{{- end -}}

{{- define "migrategate.internal.upgradeArgs" -}}
{{- $u := .values.upgrade -}}
{{- $args := list "upgrade" "--lock-timeout" (toString $u.lockTimeout) -}}
{{- if not (kindIs "invalid" $u.pgLockTimeout) -}}
{{- $args = concat $args (list "--pg-lock-timeout" (toString $u.pgLockTimeout)) -}}
{{- end -}}
{{- if not (kindIs "invalid" $u.mysqlLockWaitTimeout) -}}
{{- $args = concat $args (list "--mysql-lock-wait-timeout" (toString (int64 $u.mysqlLockWaitTimeout))) -}}
{{- end -}}
{{- if $u.lockRetries -}}
{{- $args = concat $args (list "--lock-retries" (toString (int64 $u.lockRetries))) -}}
{{- end -}}
{{- if not (kindIs "invalid" $u.statementTimeout) -}}
{{- $args = concat $args (list "--statement-timeout" (toString $u.statementTimeout)) -}}
{{- end -}}
{{- if $u.showPlan -}}
{{- $args = append $args "--show-plan" -}}
{{- end -}}
{{- if $u.refuse -}}
{{- $args = concat $args (list "--refuse" $u.refuse) -}}
{{- end -}}
{{- if .values.gate.allowAhead -}}
{{- $args = append $args "--allow-ahead" -}}
{{- end -}}
{{- $args = concat $args ($u.extraArgs | default list) -}}
{{- toYaml $args -}}
{{- end -}}

{{- define "migrategate.internal.waitArgs" -}}
{{- $g := .values.gate -}}
{{- $args := list "wait" "--timeout" (toString $g.timeout) "--interval" (toString $g.interval) -}}
{{- if $g.allowAhead -}}
{{- $args = append $args "--allow-ahead" -}}
{{- end -}}
{{- $args = concat $args ($g.extraArgs | default list) -}}
{{- toYaml $args -}}
{{- end -}}

{{- define "migrategate.internal.verifyArgs" -}}
{{- $args := list "verify" -}}
{{- if .values.gate.allowAhead -}}
{{- $args = append $args "--allow-ahead" -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}

{{/*
One container; the dict also carries "name", "args" (a YAML list string) and "role":
"gate" (the initContainer helpers: gate.securityContext / gate.resources) or "job" (the
Job and the test pod: job.securityContext / resources). The role's securityContext is
merged over containerSecurityContext (a key set to null removes it).
*/}}
{{- define "migrategate.internal.container" -}}
{{- include "migrategate.internal.validate" . -}}
{{- $v := .values -}}
{{- $over := dict -}}
{{- $resources := $v.resources -}}
{{- if eq .role "gate" -}}
{{- $over = $v.gate.securityContext | default dict -}}
{{- if $v.gate.resources }}{{ $resources = $v.gate.resources }}
{{- else if not $v.resources -}}
{{- /* requests = limits (Guaranteed stays Guaranteed, a limits quota admits it); the same
     as `migrategate inject` gives, inject.GATE_RESOURCES (a render test holds them equal) */}}
{{- $q := dict "cpu" "250m" "memory" "192Mi" -}}
{{- $resources = dict "requests" $q "limits" (deepCopy $q) -}}
{{- end -}}
{{- else -}}
{{- $over = $v.job.securityContext | default dict -}}
{{- end -}}
{{- $sc := mergeOverwrite (deepCopy ($v.containerSecurityContext | default dict)) (deepCopy $over) -}}
name: {{ .name }}
image: {{ include "migrategate.internal.image" . | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
command:
  {{- include "migrategate.internal.command" . | trim | nindent 2 }}
args:
  {{- .args | trim | nindent 2 }}
env:
  {{- include "migrategate.env" . | trim | nindent 2 }}
{{- if and (ne .role "gate") $v.job.events.enabled }}
  - name: MIGRATEGATE_K8S_EVENT
    value: "1"
  - name: MIGRATEGATE_JOB_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.labels['job-name']
{{- end }}
{{- with $v.extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  {{- include "migrategate.volumeMounts" . | trim | nindent 2 }}
{{- with $resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $sc }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
terminationMessagePath: /dev/termination-log
terminationMessagePolicy: FallbackToLogsOnError
{{- end -}}

{{/*
The pod spec of the Job (and, with "test", of the `helm test` pod): the migrategate
container with "args", the Job's pod settings, extraInitContainers/extraContainers.
*/}}
{{- define "migrategate.internal.podSpec" -}}
{{- $v := .values -}}
{{- $job := $v.job -}}
restartPolicy: Never
terminationGracePeriodSeconds: {{ int $job.terminationGracePeriodSeconds }}
{{- if $job.events.enabled }}
{{- if not $v.serviceAccountName }}
{{- fail "migrategate: job.events.enabled needs serviceAccountName: a ServiceAccount with a Role that allows create on events (see the README); the default one has no such right" }}
{{- end }}
automountServiceAccountToken: true
{{- else }}
automountServiceAccountToken: {{ $v.automountServiceAccountToken }}
{{- end }}
enableServiceLinks: false
{{- with $v.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with include "migrategate.internal.imagePullSecrets" . }}
imagePullSecrets:
  {{- . | nindent 2 }}
{{- end }}
{{- with $v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $job.extraInitContainers }}
initContainers:
  {{- tpl (toYaml .) $.context | nindent 2 }}
{{- end }}
containers:
  - {{ include "migrategate.internal.container" (merge (dict "role" "job") .) | nindent 4 | trim }}
  {{- with $job.extraContainers }}
  {{- tpl (toYaml .) $.context | nindent 2 }}
  {{- end }}
volumes:
  {{- include "migrategate.volumes" . | trim | nindent 2 }}
  {{- with $v.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- tpl (toYaml .) $.context | nindent 2 }}
{{- end }}
{{- end -}}

{{/* "true" when the cluster's API accepts Job.spec.podFailurePolicy (>= 1.26). */}}
{{- define "migrategate.internal.podFailurePolicySupported" -}}
{{- if semverCompare ">=1.26.0-0" .context.Capabilities.KubeVersion.Version -}}true{{- end -}}
{{- end -}}

{{/*
The Job's spec (everything under spec:). Its rendering, with the chart version and the
shipped source, is what the Job name hashes: values that leave the spec unchanged (gate.*
except allowAhead, global.* that the Job doesn't use, annotations, NOTES-only settings)
keep the same Job.
*/}}
{{- define "migrategate.internal.jobSpec" -}}
{{- $job := .values.job -}}
backoffLimit: {{ $job.backoffLimit }}
{{- if not (kindIs "invalid" $job.activeDeadlineSeconds) }}
activeDeadlineSeconds: {{ $job.activeDeadlineSeconds }}
{{- end }}
{{- if not (kindIs "invalid" $job.ttlSecondsAfterFinished) }}
ttlSecondsAfterFinished: {{ $job.ttlSecondsAfterFinished }}
{{- end }}
{{- if and $job.podFailurePolicy.enabled (include "migrategate.internal.podFailurePolicySupported" .) }}
podFailurePolicy:
  rules:
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
    {{- with $job.podFailurePolicy.failJobOnExitCodes }}
    {{- $padded := list }}
    {{- range . }}{{ $padded = append $padded (printf "%03d" (int .)) }}{{ end }}
    - action: FailJob
      onExitCodes:
        containerName: migrate
        operator: In
        values:
          {{- range sortAlpha $padded }}
          - {{ atoi . }}
          {{- end }}
    {{- end }}
{{- end }}
template:
  metadata:
    labels:
      {{- include "migrategate.internal.labels" (merge (dict "component" "migrate" "extra" .values.podLabels) .) | nindent 6 }}
    {{- with .values.podAnnotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    {{- include "migrategate.internal.podSpec" (merge (dict "name" "migrate" "args" (include "migrategate.internal.upgradeArgs" .)) .) | nindent 4 }}
{{- end -}}

{{/* Job name suffix: job.nameSuffixOverride (through tpl), else a hash of the Job's spec, chart and source. */}}
{{- define "migrategate.internal.jobSuffix" -}}
{{- if .values.job.nameSuffixOverride -}}
{{- $suffix := tpl (toString .values.job.nameSuffixOverride) .context -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,16}[a-z0-9])?$" $suffix) -}}
{{- fail (printf "migrategate: job.nameSuffixOverride rendered to %q: it must be 1-18 lowercase letters, digits or '-', starting and ending with a letter or digit (it ends the Job's name)" $suffix) -}}
{{- end -}}
{{- $suffix -}}
{{- else -}}
{{- $source := "" -}}
{{- if ne .values.code.source "image" -}}
{{- range (include "migrategate.internal.sourcePaths" . | fromJsonArray) -}}
{{- $source = printf "%s%s=%s;" $source . ($.context.Files.Get . | sha256sum) -}}
{{- end -}}
{{- end -}}
{{- printf "%s|%s|%s|%s" .context.Chart.Version (toString .context.Chart.AppVersion) (include "migrategate.internal.jobSpec" .) (sha256sum $source) | sha256sum | trunc 8 -}}
{{- end -}}
{{- end -}}

{{- define "migrategate.internal.jobName" -}}
{{- $base := include "migrategate.internal.truncName" (dict "name" (include "migrategate.fullname" .) "max" 44) -}}
{{- if .values.job.hook.enabled -}}
{{- printf "%s-migrate" $base -}}
{{- else -}}
{{- include "migrategate.internal.truncName" (dict "name" (printf "%s-migrate-%s" $base (include "migrategate.internal.jobSuffix" .)) "max" 63) -}}
{{- end -}}
{{- end -}}

{{/*
Annotations (a dict, JSON) of the ConfigMap and Secret the Job mounts: they must exist
before the Job. Hook mode: earlier hooks. Argo CD: an argocd.argoproj.io/sync-wave on the
Job (job.annotations) goes on them too, or Argo would wait for the Job's health in its wave
before creating them in a later one (a Job stuck in ContainerCreating). Argo CD's own hook
annotation on the Job is refused: job.hook.enabled makes Helm hooks, which Argo maps.
*/}}
{{- define "migrategate.internal.hookAnnotations" -}}
{{- $a := dict -}}
{{- $job := .values.job -}}
{{- if hasKey ($job.annotations | default dict) "argocd.argoproj.io/hook" -}}
{{- fail "migrategate: job.annotations sets argocd.argoproj.io/hook: the Job's ConfigMap and Secret would not exist before it. Use job.hook.enabled: true (Argo CD maps pre-install/pre-upgrade to PreSync, with the chart's ConfigMap and Secret as earlier hooks), or the default plain Job (recommended: a failed Job and its logs stay; see the README on Argo CD)" -}}
{{- end -}}
{{- if $job.hook.enabled -}}
{{- $a = dict "helm.sh/hook" (join "," $job.hook.events) "helm.sh/hook-weight" (sub (int $job.hook.weight) 10 | toString) "helm.sh/hook-delete-policy" "before-hook-creation" -}}
{{- else if hasKey ($job.annotations | default dict) "argocd.argoproj.io/sync-wave" -}}
{{- $a = dict "argocd.argoproj.io/sync-wave" (index $job.annotations "argocd.argoproj.io/sync-wave" | toString) -}}
{{- end -}}
{{- toJson $a -}}
{{- end -}}
