"""Jinja chat templates (GGUF ``tokenizer.chat_template``, ``tokenizer_config.json``, ``chat_template.jinja``).

The template is parsed into Jinja's AST - never rendered - and the AST is searched
for server-side-template-injection constructs that escape a sandbox or run code when
a runtime renders it without one (llama-cpp-python's CVE-2024-34359): attribute or
item walks to dunders (``__class__``, ``__globals__``, ``__subclasses__``, ``__mro__``,
``__builtins__``, ``__init__``…), Jinja's global gadgets (``cycler``, ``joiner``,
``namespace``, ``lipsum``, ``range``) and ``self`` used as objects rather than called
plainly, the ``attr`` filter with dunder or computed names, and names of OS/Python
internals reached through attributes (``popen``, ``system``, ``import_module``…).
"""

from __future__ import annotations

from typing import Any

from probes.static_scan import finding

GADGETS = frozenset({"cycler", "joiner", "namespace", "lipsum", "range", "dict", "self", "config", "request",
                     "url_for", "get_flashed_messages", "loop", "super", "varargs", "kwargs", "caller"})
# attributes no chat template needs and that only make sense on the way out of a sandbox
BAD_ATTRS = frozenset({"mro", "popen", "system", "import_module", "func_globals", "f_globals", "f_locals",
                       "f_back", "gi_frame", "gi_code", "cr_frame", "tb_frame", "co_code", "im_func", "im_self",
                       "func_code", "eval", "exec", "_TemplateReference__context", "getattr", "environ",
                       "check_output", "spawn", "load_module", "get_data", "_module", "__import__"})
CALL_GADGETS = frozenset({"getattr", "setattr", "delattr", "eval", "exec", "compile", "__import__", "open", "globals",
                          "locals", "vars", "breakpoint", "input", "help"})
_GADGET_ATTR_OK = {"namespace": set(), "loop": {"index", "index0", "first", "last", "length", "revindex",
                                                 "revindex0", "cycle", "depth", "depth0", "previtem", "nextitem",
                                                 "changed"}}
MAX_TEMPLATE_CHARS = 1 << 20


def _is_bad_attr(attr: str) -> bool:
    return (attr.startswith("__") and attr.endswith("__")) or attr in BAD_ATTRS or attr.startswith("_")


def check(sc: Any, loc: Any, source: str, what: str, *, offset: int | None = None) -> int:  # noqa: C901 - one branch per construct
    """Parse ``source`` as Jinja and report escape constructs; unparseable templates are inconclusive."""
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if len(source) > MAX_TEMPLATE_CHARS:
        sc.fail(loc, f"{what}: chat template of {len(source)} characters, over the {MAX_TEMPLATE_CHARS} limit")
        return 0
    env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    try:
        ast = env.parse(source)
    except (TemplateSyntaxError, RecursionError, ValueError) as exc:
        sc.fail(loc, f"{what}: chat template does not parse as Jinja ({finding.excerpt(str(exc), 120)})")
        return 0
    lines = source.splitlines()
    before = len(sc.findings)
    per_line: dict[int, list] = {}  # line -> [severity, reasons, targets]: one finding per template line

    def report(node: Any, sev: str, why: str, target: str) -> None:
        line = getattr(node, "lineno", 0) or 0
        entry = per_line.setdefault(line, [sev, [], []])
        if sev == "high":
            entry[0] = "high"
        if why not in entry[1]:
            entry[1].append(why)
        if target not in entry[2]:
            entry[2].append(target)

    def root_name(n: Any) -> str | None:
        while isinstance(n, (nodes.Getattr, nodes.Getitem, nodes.Call, nodes.Filter)):
            n = n.node
        return n.name if isinstance(n, nodes.Name) else None

    for n in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Name, nodes.Call)):
        if isinstance(n, nodes.Getattr):
            base = root_name(n.node)
            if _is_bad_attr(n.attr):
                report(n, "high", f"attribute walk to {n.attr!r}" + (f" from {base!r}" if base else ""), n.attr)
            elif base in GADGETS and isinstance(n.node, nodes.Name) and base not in ("loop",) \
                    and n.attr not in _GADGET_ATTR_OK.get(base, set()):
                if base == "namespace" or base == "dict":
                    continue
                report(n, "high" if base in ("cycler", "joiner", "lipsum", "self", "range", "config", "request")
                       else "medium", f"attribute {n.attr!r} of the Jinja global {base!r} (a sandbox-escape gadget)",
                       f"{base}.{n.attr}")
        elif isinstance(n, nodes.Getitem):
            arg = n.arg
            if isinstance(arg, nodes.Const) and isinstance(arg.value, str) and _is_bad_attr(arg.value):
                report(n, "high", f"item access to {arg.value!r}", arg.value)
            elif not isinstance(arg, nodes.Const) and "__" in "".join(
                    str(c.value) for c in arg.find_all(nodes.Const) if isinstance(c.value, str)):
                report(n, "high", "item access with a dunder name built from pieces", "computed dunder")
            elif isinstance(n.node, nodes.Name) and n.node.name in GADGETS - {"loop", "namespace", "dict", "range"}:
                report(n, "high", f"item access on the Jinja global {n.node.name!r}", n.node.name)
        elif isinstance(n, nodes.Filter):
            if n.name in ("attr", "map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"):
                vals = [a for a in n.args] + [kw.value for kw in n.kwargs]
                for a in vals:
                    if isinstance(a, nodes.Const) and isinstance(a.value, str) and any(
                            _is_bad_attr(part) for part in a.value.split(".")):
                        report(n, "high", f"filter {n.name!r} reaches the attribute {a.value!r}", a.value)
                    elif n.name == "attr" and not isinstance(a, nodes.Const):
                        report(n, "medium", "filter 'attr' with a computed attribute name", "attr")
        elif isinstance(n, nodes.Name):
            if n.name == "self":
                report(n, "medium", "uses 'self' (the template reference object)", "self")
        elif isinstance(n, nodes.Call):
            base = root_name(n.node)
            dunder_args = [a.value for a in n.args if isinstance(a, nodes.Const) and isinstance(a.value, str)
                           and a.value.startswith("__") and a.value.endswith("__")]
            if isinstance(n.node, nodes.Name) and n.node.name in CALL_GADGETS:
                report(n, "high", f"calls {n.node.name!r}, a Python builtin no Jinja template has", n.node.name)
            elif dunder_args:
                report(n, "high", f"passes the dunder name {dunder_args[0]!r} to a call", dunder_args[0])
            elif isinstance(n.node, nodes.Name) and n.node.name in ("cycler", "joiner", "lipsum"):
                report(n, "medium", f"calls the Jinja global {n.node.name!r}, not used by chat templates", n.node.name)
            elif base and isinstance(n.node, nodes.Getattr) and n.node.attr in ("format", "format_map") \
                    and any(isinstance(a, nodes.Const) and isinstance(a.value, str) and "{0." in a.value
                            for a in n.args):
                report(n, "high", "str.format with attribute fields (format-string escape)", "format")
    for line, (sev, whys, targets) in sorted(per_line.items()):
        text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        finding.add(sc, loc, sev, "chat-template-injection",
                    f"{what} line {line}: {'; '.join(whys[:6])} - a runtime that renders it outside a sandbox runs "
                    "code (CVE-2024-34359 family)", offset=offset, name=",".join(targets[:6]), opcode="jinja",
                    where=f"{what}:{line}", node=text[:400])
    return len(sc.findings) - before
