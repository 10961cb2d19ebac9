"""The chart renderer behaves as Go's text/template and Helm's functions do, on what the chart uses."""

from __future__ import annotations

import pytest

from tests.deploy.gotemplate import Renderer, TemplateError, merge

VALUES = {"Values": {"name": "x", "n": 3, "on": True, "off": False, "empty": {}, "list": ["a", "b"],
                     "map": {"b": 2, "a": 1}, "nested": {"k": "v"}}, "Release": {"Name": "r"}}


def r(source: str, dot=VALUES, defines: str = "") -> str:
    renderer = Renderer()
    renderer.collect(defines)
    return renderer.render(source, dot)


@pytest.mark.parametrize(("source", "expected"), [
    ("a {{ .Values.name }} b", "a x b"),
    ("a\n  {{- .Values.name }}\n", "ax\n"),
    ("a {{ .Values.name -}}\n  b", "a xb"),
    ("{{/* a comment */}}c", "c"),
    ("{{ if .Values.on }}y{{ else }}n{{ end }}", "y"),
    ("{{ if .Values.off }}y{{ else if .Values.n }}m{{ else }}n{{ end }}", "m"),
    ("{{ if not .Values.empty }}empty{{ end }}", "empty"),
    ("{{ with .Values.nested }}{{ .k }}{{ $.Release.Name }}{{ end }}", "vr"),
    ("{{ with .Values.empty }}x{{ else }}none{{ end }}", "none"),
    ("{{ range .Values.list }}[{{ . }}]{{ end }}", "[a][b]"),
    ("{{ range $k, $v := .Values.map }}{{ $k }}={{ $v }};{{ end }}", "a=1;b=2;"),
    ("{{ .Values.missing | default \"d\" }}", "d"),
    ("{{ .Values.name | quote }}", '"x"'),
    ("{{ .Values.n | quote }}", '"3"'),
    ("{{ .Values.on }}", "true"),
    ("{{ printf \"%s-%s\" .Release.Name .Values.name | trunc 3 | trimSuffix \"-\" }}", "r-x"),
    ("{{ \"abc\" | b64enc }}", "YWJj"),
    ("k:{{ toYaml .Values.map | nindent 2 }}", "k:\n  a: 1\n  b: 2"),
    ("{{ or .Values.off .Values.empty .Values.name }}", "x"),
    ("{{ and .Values.on .Values.off }}", "false"),
    ("{{ if gt (int .Values.n) 2 }}big{{ end }}", "big"),
])
def test_rendering(source, expected):
    assert r(source) == expected


def test_define_and_include_with_their_own_dot():
    defines = '{{- define "t" -}}<{{ .Values.name }}>{{- end -}}'
    assert r('{{ include "t" . }}/{{ include "t" . | quote }}', defines=defines) == '<x>/"<x>"'


def test_required_fail_and_unknown_functions_are_errors():
    with pytest.raises(TemplateError, match="need it"):
        r('{{ required "need it" .Values.missing }}')
    with pytest.raises(TemplateError, match="stop"):
        r('{{ fail "stop" }}')
    with pytest.raises(TemplateError, match="not supported"):
        r("{{ lookup .Values.name }}")
    with pytest.raises(TemplateError, match="without end"):
        r("{{ if .Values.on }}x")


def test_values_merge_like_helm():
    assert merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]}) == {"a": {"b": 1, "c": 3}, "l": [2]}
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": None}, "x": None}) == {"a": {"c": 2}}  # null deletes


def test_raw_strings_and_methods():
    dot = {"Files": {"Get": lambda name: f"<{name}>"}, "Values": {}}
    assert r("{{`{{ $labels.x }}`}}|{{ .Files.Get \"a.json\" }}", dot) == "{{ $labels.x }}|<a.json>"
    assert r('{{ dig "a" "b" "none" .Values }}', {"Values": {"a": {"b": 7}}}) == "7"
    assert r('{{ dig "a" "z" "none" .Values }}', {"Values": {"a": {}}}) == "none"
