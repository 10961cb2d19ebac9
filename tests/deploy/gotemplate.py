"""A renderer for the part of Helm's template language the chart uses, for machines without helm.

Go's text/template: `{{ }}` actions with `{{-`/`-}}` trimming, comments, `if`/`else if`/`else`,
`with`, `range` (lists; maps in key order, with `$k, $v :=`), `define`/`include`, pipelines and
parenthesised calls, `.Field` chains, `$` and `$var`. The functions are Helm's (sprig) for the
ones listed in FUNCTIONS. Anything else is an error, so the chart cannot drift outside what
this renders without a test saying so. `render_chart` renders a chart directory like
`helm template`: it checks the values against values.schema.json, offers `.Files.Get`, and
returns a dict of template path to text.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import pathlib
import re

import yaml


class TemplateError(Exception):
    pass


NOTHING = object()  # no value piped into a command


# An action ends at the first `}}` outside a string: `{{`{{ $labels.x }}`}}` prints its raw string.
_ACTION = re.compile(r'{{(-\s)?(/\*.*?\*/|(?:"(?:[^"\\]|\\.)*"|`[^`]*`|[^"`])*?)(\s-)?}}', re.S)
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+(?:\.\d+)?)'
                    r'|(?P<op>:=|[|(),=])'
                    r"|(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)|(?P<field>(?:\.[A-Za-z0-9_]+)+|\.)"
                    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*))")


def _lex(source: str) -> list[tuple[str, str]]:
    """Text and action tokens, with trim markers applied to the text around them."""
    out, pos = [], 0
    for match in _ACTION.finditer(source):
        text = source[pos:match.start()]
        if match.group(1):
            text = text.rstrip()
        out.append(("text", text))
        body = match.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            out.append(("action", body))
        pos = match.end()
        if match.group(3):
            rest = source[pos:]
            pos += len(rest) - len(rest.lstrip())
    out.append(("text", source[pos:]))
    return [t for t in out if t != ("text", "")]


def _words(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            if expr[pos:].strip() == "":
                break
            raise TemplateError(f"cannot read {expr[pos:]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _parse(tokens, i=0, stop=("end",)):
    """Nodes up to a closing keyword; returns (nodes, index of the closing token, its text)."""
    nodes = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        head = value.split(None, 1)[0]
        if head in ("end", "else"):
            return nodes, i, value
        if head in ("if", "with", "range"):
            node, i = _block(tokens, i, head, value[len(head):].strip())
            nodes.append(node)
        elif head == "define":
            body, i, _ = _parse(tokens, i + 1)
            nodes.append(("define", json.loads(value[len(head):].strip()), body))
            i += 1
        else:
            nodes.append(("out", value))
            i += 1
    return nodes, i, None


def _block(tokens, i, head, expr):
    branches, otherwise = [], []
    body, i, closing = _parse(tokens, i + 1)
    branches.append((expr, body))
    while closing is not None and closing.startswith("else"):
        rest = closing[4:].strip()
        if rest.startswith("if "):
            body, i, closing = _parse(tokens, i + 1)
            branches.append((rest[3:].strip(), body))
        else:
            otherwise, i, closing = _parse(tokens, i + 1)
    if closing != "end":
        raise TemplateError(f"{head} without end")
    return (head, branches, otherwise), i + 1


def truthy(value) -> bool:
    return value not in (None, False, 0, "", 0.0) and not (isinstance(value, list | dict) and not value)


def text_of(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True, width=1 << 16).rstrip("\n")


def _indent(n, text) -> str:
    return "\n".join((" " * n + line) if line else line for line in text_of(text).split("\n"))


def _required(message, value):
    if value is None or value == "":
        raise TemplateError(message)
    return value


def _fail(message):
    raise TemplateError(message)


def _dig(*args):
    """sprig's dig: `dig "a" "b" DEFAULT MAP` is MAP.a.b, or DEFAULT where a key is missing."""
    *keys, default, value = args
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def _printf(fmt, *args):
    return re.sub(r"%[vsd]", "%s", fmt) % tuple(text_of(a) for a in args)


FUNCTIONS = {
    "toYaml": _to_yaml, "nindent": lambda n, s: "\n" + _indent(n, s), "indent": _indent,
    "quote": lambda v: json.dumps(text_of(v)), "default": lambda d, v=None: v if truthy(v) else d,
    "required": _required, "fail": _fail, "printf": _printf, "trunc": lambda n, s: text_of(s)[:n],
    "trimSuffix": lambda suffix, s: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
    "b64enc": lambda s: base64.b64encode(text_of(s).encode()).decode(),
    "sha256sum": lambda s: hashlib.sha256(text_of(s).encode()).hexdigest(),
    "not": lambda v: not truthy(v), "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b, "int": lambda v: int(v or 0), "toString": text_of,
    "trim": lambda s: text_of(s).strip(), "dig": _dig,
    "hasPrefix": lambda prefix, s: text_of(s).startswith(prefix),
}


class Renderer:
    def __init__(self, defines: dict | None = None) -> None:
        self.defines = defines or {}

    def render(self, source: str, dot) -> str:
        nodes, _, closing = _parse(_lex(source))
        if closing is not None:
            raise TemplateError(f"unexpected {closing!r}")
        return self._run(nodes, dot, {"$": dot})

    def collect(self, source: str) -> None:
        """Keep the `define`s of a helpers file."""
        nodes, _, _ = _parse(_lex(source))
        for node in nodes:
            if node[0] == "define":
                self.defines[node[1]] = node[2]

    def _run(self, nodes, dot, scope) -> str:
        out = []
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "out":
                out.append(text_of(self._pipeline(node[1], dot, scope)))
            elif kind == "define":
                self.defines[node[1]] = node[2]
            else:
                out.append(self._control(node, dot, scope))
        return "".join(out)

    def _control(self, node, dot, scope) -> str:
        head, branches, otherwise = node
        if head == "range":
            return self._range(branches[0], otherwise, dot, scope)
        for expr, body in branches:
            value = self._pipeline(expr, dot, scope)
            if truthy(value):
                return self._run(body, value if head == "with" else dot, scope)
        return self._run(otherwise, dot, scope)

    def _range(self, branch, otherwise, dot, scope) -> str:
        expr, body = branch
        names = []
        if ":=" in expr:
            left, expr = expr.split(":=", 1)
            names = [n.strip() for n in left.split(",")]
        value = self._pipeline(expr.strip(), dot, scope)
        if not truthy(value):
            return self._run(otherwise, dot, scope)
        pairs = sorted(value.items()) if isinstance(value, dict) else list(enumerate(value))
        out = []
        for key, item in pairs:
            inner = dict(scope)
            if len(names) == 2:
                inner[names[0]], inner[names[1]] = key, item
            elif names:
                inner[names[0]] = item
            out.append(self._run(body, item, inner))
        return "".join(out)

    # -- pipelines ----------------------------------------------------------------------------
    def _pipeline(self, expr: str, dot, scope):
        tokens = _words(expr)
        value, pos = self._command(tokens, 0, dot, scope, NOTHING)
        while pos < len(tokens) and tokens[pos] == ("op", "|"):
            value, pos = self._command(tokens, pos + 1, dot, scope, value)
        if pos != len(tokens):
            raise TemplateError(f"cannot read {expr!r}")
        return value

    def _command(self, tokens, pos, dot, scope, piped):
        """One command; `piped` (the previous command's value, or NOTHING) is its last argument."""
        args, name = [], None
        if tokens[pos][0] == "ident" and tokens[pos][1] not in ("true", "false", "nil"):
            name, pos = tokens[pos][1], pos + 1
        while pos < len(tokens) and tokens[pos][1] not in ("|", ")"):
            value, pos = self._operand(tokens, pos, dot, scope)
            args.append(value)
        if piped is not NOTHING:
            args.append(piped)
        if name is None:
            if callable(args[0]):  # a method, such as .Files.Get "path"
                return args[0](*args[1:]), pos
            if len(args) != 1:
                raise TemplateError(f"a value cannot take arguments: {tokens}")
            return args[0], pos
        return self._call(name, args, dot), pos

    def _operand(self, tokens, pos, dot, scope):
        kind, text = tokens[pos]
        if kind == "op" and text == "(":
            value, pos = self._command(tokens, pos + 1, dot, scope, NOTHING)
            while tokens[pos] == ("op", "|"):
                value, pos = self._command(tokens, pos + 1, dot, scope, value)
            return value, pos + 1
        if kind == "str":
            return json.loads(text), pos + 1
        if kind == "raw":
            return text[1:-1], pos + 1
        if kind == "num":
            return (float(text) if "." in text else int(text)), pos + 1
        if kind == "ident":
            return {"true": True, "false": False, "nil": None}[text], pos + 1
        if kind == "var":
            root, _, rest = text.partition(".")
            if root not in scope:
                raise TemplateError(f"undefined variable {root}")
            return _field(scope[root], rest), pos + 1
        if kind == "field":
            return _field(dot, text[1:]), pos + 1
        raise TemplateError(f"unexpected {text!r}")

    def _call(self, name, args, dot):
        if name == "include":
            template, data = args
            if template not in self.defines:
                raise TemplateError(f"no template {template!r}")
            return self._run(self.defines[template], data, {"$": data})
        if name == "and":
            return next((a for a in args if not truthy(a)), args[-1])
        if name == "or":
            return next((a for a in args if truthy(a)), args[-1])
        if name not in FUNCTIONS:
            raise TemplateError(f"function {name!r} is not supported here")
        return FUNCTIONS[name](*args)


def _field(value, path: str):
    for part in filter(None, path.split(".")):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def merge(base: dict, override: dict) -> dict:
    """Helm's values merge: maps merge key by key, everything else is replaced, null deletes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_values(chart: pathlib.Path, values: dict) -> None:
    """What Helm does with a chart's values.schema.json before rendering: refuse values that break it."""
    path = chart / "values.schema.json"
    if not path.exists():
        return
    import jsonschema

    validator = jsonschema.Draft7Validator(json.loads(path.read_text()))
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))]
    if problems:
        raise TemplateError("values don't meet the specifications of the schema:\n" + "\n".join(problems))


def _files(chart: pathlib.Path):
    """.Files: Get reads a file of the chart by its path in the chart ("" when there is none)."""
    def get(name: str) -> str:
        path = chart / name
        return path.read_text() if path.is_file() else ""
    return {"Get": get}


def render_chart(chart: pathlib.Path, values: dict | None = None, release: str = "gw",
                 namespace: str = "castai-llms") -> dict[str, str]:
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    top = {
        "Values": merge(yaml.safe_load((chart / "values.yaml").read_text()) or {}, values or {}),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]},
        "Files": _files(chart),
    }
    check_values(chart, top["Values"])
    renderer = Renderer()
    for helper in sorted((chart / "templates").glob("_*.tpl")):
        renderer.collect(helper.read_text())
    return {f"templates/{path.name}": renderer.render(path.read_text(), top)
            for path in sorted((chart / "templates").iterdir()) if not path.name.startswith("_")}
