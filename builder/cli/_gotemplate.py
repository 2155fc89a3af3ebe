"""The part of Go's text/template that docker's ``--format`` scripts use: fields, ``range``
(``{{range .RepoTags}}``, ``{{range $k, $v := .Config.Labels}}``), ``if``/``with``/``else``, variables,
string literals, and docker's functions (json, index, join, split, upper, lower, title, len,
print, println). Values print as Go prints them (``[a b]``, ``map[k:v]``, ``<nil>``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from builder.errors import UsageError

_ACTION_RE = re.compile(r"{{(-\s)?\s*(.*?)\s*(\s-)?}}", re.S)
_WORD_RE = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|:=|,|[^\s,:]+(?::(?!=)[^\s,:]*)*')
_FIELD_RE = re.compile(r"^(?:\$[A-Za-z0-9_]*)?(?:\.[A-Za-z_][A-Za-z0-9_]*)*$|^\.$")
GO_TYPES = {str: "string", float: "float64", bool: "bool", type(None): "nil"}  # as Go names them
FUNCTIONS = ("json", "index", "join", "split", "upper", "lower", "title", "len", "print", "println")

# Fields docker's structs type as slices or maps: a null one prints as Go's empty value.
_NIL_SLICES = frozenset({"Cmd", "Entrypoint", "Env", "OnBuild", "Shell", "RepoTags", "RepoDigests", "Layers"})
_NIL_MAPS = frozenset({"Labels", "Volumes", "ExposedPorts"})
_EMPTY_STRUCT_MAPS = frozenset({"ExposedPorts", "Volumes"})  # map[string]struct{}

# What docker's image inspect leaves out when empty (omitempty) but a template still reads.
_INSPECT_OMITTED: dict[str, Any] = {
    "Variant": "", "Config.ExposedPorts": None, "Config.Healthcheck": None, "Config.ArgsEscaped": False,
    "Config.NetworkDisabled": False, "Config.MacAddress": "", "Config.StopSignal": "",
    "Config.StopTimeout": None, "Config.Shell": None,
}


class GoEmptyStruct:
    """Go's ``struct{}{}``, which text/template prints as ``{}``."""

    def __str__(self) -> str:
        return "{}"


def go_value(value: Any) -> str:
    """A value printed as Go's text/template prints it (``[a b]``, ``map[k:v]``)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    """Go's ``if``: false, 0, nil and empty strings, slices and maps are false."""
    return bool(value) if not isinstance(value, GoEmptyStruct) else True


@dataclass
class _Node:
    kind: str  # "text", "action", "range", "if", "with"
    text: str = ""
    words: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # range/if variables: {{range $k, $v := ...}}
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


@dataclass(frozen=True)
class Template:
    """A parsed template; :meth:`execute` renders it for one object."""

    source: str
    nodes: tuple[_Node, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        text = source.replace("\\t", "\t").replace("\\n", "\n")
        if "{{" in _ACTION_RE.sub("", text):
            raise UsageError(f"template parsing error: template: :1: unclosed action in {source!r}")
        tokens: list[tuple[str, str]] = []
        pos = 0
        for match in _ACTION_RE.finditer(text):
            before = text[pos:match.start()]
            if match.group(1):
                before = before.rstrip()
            tokens.append(("text", before))
            tokens.append(("action", match.group(2)))
            pos = match.end()
            if match.group(3):
                pos += len(text[pos:]) - len(text[pos:].lstrip())
        tokens.append(("text", text[pos:]))
        parser = _Parser(source, tokens)
        nodes = parser.block(top=True)
        return cls(source, tuple(nodes))

    def execute(self, obj: Any) -> str:
        out: list[str] = []
        _Executor(self.source, obj).run(list(self.nodes), obj, {"$": obj}, out)
        return "".join(out)


class _Parser:
    def __init__(self, source: str, tokens: list[tuple[str, str]]) -> None:
        self.source = source
        self.tokens = tokens
        self.pos = 0
        self.ended_by = ""

    def error(self, message: str) -> UsageError:
        return UsageError(f"template parsing error: {message} in {self.source!r}")

    def block(self, top: bool = False) -> list[_Node]:
        nodes: list[_Node] = []
        while self.pos < len(self.tokens):
            kind, value = self.tokens[self.pos]
            self.pos += 1
            if kind == "text":
                if value:
                    nodes.append(_Node("text", text=value))
                continue
            words = _WORD_RE.findall(value)
            if not words or words[0].startswith("/*"):
                continue  # {{/* a comment */}}
            head = words[0]
            if head in ("end", "else"):
                if top:
                    raise self.error(f"unexpected {{{{{head}}}}}")
                self.ended_by = head
                return nodes
            if head in ("range", "if", "with"):
                names, pipeline = self._declaration(words[1:])
                node = _Node(head, words=pipeline, names=names)
                node.body = self.block()
                if self.ended_by == "else":
                    node.orelse = self.block()
                    if self.ended_by != "end":
                        raise self.error(f"expected {{{{end}}}} after {{{{else}}}} of {head}")
                nodes.append(node)
                continue
            if head in ("define", "template", "block", "break", "continue") or "|" in words:
                raise UsageError(f"unsupported template {self.source!r}: pybuild understands fields, "
                                 "range, if/with/else, variables and the functions " + ", ".join(FUNCTIONS))
            names, pipeline = self._declaration(words)
            nodes.append(_Node("action", words=pipeline, names=names))
        if not top:
            raise self.error("unexpected EOF: a range or if has no {{end}}")
        return nodes

    def _declaration(self, words: list[str]) -> tuple[list[str], list[str]]:
        """``$k, $v := PIPELINE`` -> (["$k", "$v"], PIPELINE); a bare pipeline has no names."""
        if ":=" not in words:
            if not words:
                raise self.error("missing value")
            _check_pipeline(words, self.source)
            return [], words
        at = words.index(":=")
        names = [w for w in words[:at] if w != ","]
        if not names or len(names) > 2 or not all(re.fullmatch(r"\$[A-Za-z0-9_]+", n) for n in names):
            raise self.error("bad variable declaration")
        pipeline = words[at + 1:]
        if not pipeline:
            raise self.error("missing value for declaration")
        _check_pipeline(pipeline, self.source)
        return names, pipeline


def _check_pipeline(words: list[str], source: str) -> None:
    head = words[0]
    if _is_operand(head):
        if len(words) > 1:
            raise UsageError(f"template {source!r}: can't give argument to non-function {head}")
        return
    if head not in FUNCTIONS:
        raise UsageError(f"unsupported template function {head!r} in {source!r}")
    for word in words[1:]:
        if not _is_operand(word):
            raise UsageError(f"unsupported template {source!r}: {word} is not a field, variable or literal")


def _is_operand(word: str) -> bool:
    return bool(_FIELD_RE.match(word)) or word[0] in "\"`" or bool(re.fullmatch(r"-?\d+|true|false|nil", word))


class _Executor:
    def __init__(self, source: str, root: Any) -> None:
        self.source = source
        self.root = root

    def run(self, nodes: list[_Node], dot: Any, env: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                value = self.pipeline(node.words, dot, env)
                if node.names:
                    env[node.names[0]] = value
                else:
                    out.append(go_value(value))
            elif node.kind in ("if", "with"):  # with: the body's dot is the value
                value = self.pipeline(node.words, dot, env)
                scope = dict(env)
                if node.names:
                    scope[node.names[-1]] = value
                if _truthy(value):
                    self.run(node.body, value if node.kind == "with" else dot, scope, out)
                else:
                    self.run(node.orelse, dot, scope, out)
            else:
                self.range(node, dot, env, out)

    def range(self, node: _Node, dot: Any, env: dict[str, Any], out: list[str]) -> None:
        value = self.pipeline(node.words, dot, env)
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif value is None:
            items = []
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        else:
            raise UsageError(f"template {self.source!r}: range can't iterate over {go_value(value)}")
        if not items:
            self.run(node.orelse, dot, dict(env), out)
            return
        for key, item in items:
            scope = dict(env)
            if len(node.names) == 1:
                scope[node.names[0]] = item
            elif len(node.names) == 2:
                scope[node.names[0]], scope[node.names[1]] = key, item
            self.run(node.body, item, scope, out)

    def pipeline(self, words: list[str], dot: Any, env: dict[str, Any]) -> Any:
        head = words[0]
        if _is_operand(head):
            return self.operand(head, dot, env, typed=True)
        if head == "json":  # of the value as docker's JSON has it: a null slice stays null
            if len(words) != 2:
                raise UsageError(f"template {self.source!r}: json takes one value")
            value = self.operand(words[1], dot, env, typed=False)
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        args = [self.operand(w, dot, env, typed=True) for w in words[1:]]
        return self.call(head, args)

    def call(self, func: str, args: list[Any]) -> Any:
        def need(count: int) -> None:
            if len(args) != count:
                raise UsageError(f"template {self.source!r}: wrong number of args for {func}: "
                                 f"want {count} got {len(args)}")

        if func == "index":
            if not args:
                raise UsageError(f"template {self.source!r}: index needs a map or a list")
            value = args[0]
            for key in args[1:]:
                if isinstance(value, str):  # Go indexes a string's bytes, and gives a number
                    value = tuple(value.encode("utf-8", "surrogateescape"))
                if isinstance(value, list | tuple):
                    if not isinstance(key, int) or isinstance(key, bool):
                        raise UsageError(f"template {self.source!r}: error calling index: cannot index "
                                         f"slice/array with type {GO_TYPES.get(type(key), type(key).__name__)}")
                    if not 0 <= key < len(value):
                        raise UsageError(f"template {self.source!r}: error calling index: index out of "
                                         f"range: {key}")
                    value = value[key]
                else:  # Go's index of a missing key (or of a nil map) is the zero value
                    value = value.get(str(key)) if isinstance(value, dict) else None
                    if value is None:
                        return ""
            return value
        if func == "join":
            need(2)
            return str(args[1]).join(go_value(v) for v in (args[0] or []))
        if func == "split":
            need(2)
            return str(args[0]).split(str(args[1]))
        if func in ("upper", "lower", "title"):
            need(1)
            text = go_value(args[0])
            return {"upper": text.upper, "lower": text.lower, "title": text.title}[func]()
        if func == "len":
            need(1)
            return len(args[0] or ())
        parts = [go_value(a) for a in args]
        if func == "println":
            return " ".join(parts) + "\n"
        # Go's print puts spaces only between operands that are not both strings
        text = ""
        for i, part in enumerate(parts):
            if i and not (isinstance(args[i - 1], str) or isinstance(args[i], str)):
                text += " "
            text += part
        return text

    def operand(self, word: str, dot: Any, env: dict[str, Any], *, typed: bool) -> Any:
        if word[0] == '"':
            return json.loads(word, strict=False)
        if word[0] == "`":
            return word[1:-1]
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word in ("true", "false"):
            return word == "true"
        if word == "nil":
            return None
        if word.startswith("$"):
            name, _, path = word.partition(".")
            if name not in env:
                raise UsageError(f"template {self.source!r}: undefined variable: {name}")
            return self.lookup(env[name], path, typed=typed, at_root=name == "$")
        return self.lookup(dot, word[1:], typed=typed, at_root=dot is self.root)

    def lookup(self, value: Any, path: str, *, typed: bool, at_root: bool) -> Any:
        parts = [p for p in path.split(".") if p]
        for i, part in enumerate(parts):
            if not isinstance(value, dict):
                raise UsageError(f"template {self.source!r}: can't evaluate field {part} in "
                                 f"{type(value).__name__}")
            if part not in value:
                dotted = ".".join(parts[:i + 1])
                if at_root and isinstance(self.root, dict) and "RootFS" in self.root and dotted in _INSPECT_OMITTED:
                    value = _INSPECT_OMITTED[dotted]
                    continue
                raise UsageError(f"template {self.source!r}: can't evaluate field {part}")
            value = value[part]
        if not typed or not parts:
            return value
        last = parts[-1]
        if value is None and last in _NIL_SLICES:
            return []
        if value is None and last in _NIL_MAPS:
            value = {}
        if last in _EMPTY_STRUCT_MAPS and isinstance(value, dict):
            return {key: GoEmptyStruct() for key in value}
        return value


def render(template: str, obj: Any) -> str:
    """``template`` rendered for ``obj``; with ``obj`` None, only checked."""
    parsed = Template.parse(template)
    return "" if obj is None else parsed.execute(obj)
