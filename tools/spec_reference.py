"""Render docs/spec-reference.md from wheelflow.schema.json: every table and key of the spec.

    python tools/spec_reference.py          # rewrites the part between the markers in docs/spec-reference.md
    python tools/spec_reference.py --check  # exit 1 when docs/spec-reference.md is not what the schema renders

Only the block between ``<!-- spec-reference:begin -->`` and ``<!-- spec-reference:end -->`` is
generated; the text around it is kept as written. The output depends on the schema file alone
(its key order included), so it is the same on every machine. Reads JSON only: no wheelflow import.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "wheelflow.schema.json"
OUTPUT = ROOT / "docs" / "spec-reference.md"
BEGIN, END = "<!-- spec-reference:begin -->", "<!-- spec-reference:end -->"
ROOT_TABLE = "tool.wheelflow"

# Written once, when docs/spec-reference.md does not exist yet; edited by hand afterwards.
FRAME = f"""# Spec reference

The release spec is `[tool.wheelflow]` in the released project's `pyproject.toml`, or a standalone
TOML file given with `--spec`, with the same keys at the top level (`[targets.staging]` there is
`[tool.wheelflow.targets.staging]` here).

{BEGIN}
{END}
"""

# Keywords that the tables below render; any other one is shown as JSON next to its key.
RENDERED = {
    "$ref",
    "anyOf",
    "const",
    "enum",
    "type",
    "items",
    "additionalProperties",
    "properties",
    "required",
    "default",
    "description",
    "title",
    "examples",
    "exclusiveMinimum",
    "minItems",
    "minLength",
    "minProperties",
    "pattern",
    "if",
    "then",
    "else",
    "$defs",
    "$schema",
}


# -- values and names --------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A JSON value as TOML writes it (inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def code(text: str) -> str:
    return f"``{text}``" if "`" in text else f"`{text}`"


def cell(text: str) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def prose(text: str) -> str:
    """A docstring-style description as Markdown: ``x`` becomes `x`, and words Markdown would mangle
    (``__version__``, ``WHEELFLOW_<TARGET>_USERNAME``, ``{version}``, ``cu130*``) become code too."""
    parts = re.split(r"(``.+?``|`[^`]+`)", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append("`" + part.strip("`") + "`")
        else:
            out.append(re.sub(r'\{ [^{}]* \}|\[[^\[\]]*"[^\[\]]*\]|\S+', _code_word, part))
    return "".join(out)


def _code_word(match: re.Match[str]) -> str:
    word = match.group(0)
    if word.startswith(("{ ", "[")) and word.endswith(("}", "]")) and " " in word:  # an inline table or list
        return f"`{word}`"
    core = word.lstrip("(").rstrip(",.;:)")
    if not core or not re.search(r"[_<>*{}$]", core) or not re.search(r"\w", core) or "`" in core:
        return word
    start = word.index(core)
    return f"{word[:start]}`{core}`{word[start + len(core) :]}"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# -- the tables: which definition is which TOML table ------------------------------------------------


class Table:
    def __init__(self, name: str, node: dict[str, Any], path: str, array: bool) -> None:
        self.name, self.node, self.path, self.array = name, node, path, array

    @property
    def header(self) -> str:
        return f"[[{self.path}]]" if self.array else f"[{self.path}]"

    @property
    def kind(self) -> str | None:
        """The ``kind`` this table is for, when tables of one path differ by kind (targets)."""
        return self.node.get("properties", {}).get("kind", {}).get("const")

    @property
    def heading(self) -> str:
        return code(self.header) + (f" with kind = {code(toml_value(self.kind))}" if self.kind else "")

    @property
    def anchor(self) -> str:
        return "#" + slug(self.heading.replace("`", ""))


def resolve(ref: str) -> str:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"unsupported $ref {ref!r}: only {prefix}NAME is rendered")
    return ref[len(prefix) :]


def child_refs(prop: dict[str, Any], path: str) -> list[tuple[str, str, bool]]:
    """(definition, TOML path, array of tables?) for each table a key's value is or holds."""
    found: list[tuple[str, str, bool]] = []
    if "$ref" in prop:
        found.append((resolve(prop["$ref"]), path, False))
    items = prop.get("items")
    if isinstance(items, dict) and "$ref" in items:
        found.append((resolve(items["$ref"]), path, True))
    extra = prop.get("additionalProperties")
    if isinstance(extra, dict) and "$ref" in extra:
        found.append((resolve(extra["$ref"]), f"{path}.NAME", False))
    for branch in extra.get("oneOf", []) if isinstance(extra, dict) else []:  # one table per kind
        found.append((resolve(branch["$ref"]), f"{path}.NAME", False))
    for branch in prop.get("anyOf", []):
        found.extend(child_refs(branch, path))
    return found


def tables(schema: dict[str, Any]) -> list[Table]:
    """The root table, then each table it uses, depth first in the order the keys are declared."""
    defs = schema.get("$defs", {})
    order: list[Table] = []
    seen: set[str] = set()

    def visit(table: Table) -> None:
        order.append(table)
        for key, prop in table.node.get("properties", {}).items():
            for name, path, array in child_refs(prop, f"{table.path}.{key}"):
                if name not in seen:
                    seen.add(name)
                    visit(Table(name, defs[name], path, array))

    visit(Table("", schema, ROOT_TABLE, False))
    for name in defs:  # definitions no key uses, if any: still documented
        if name not in seen:
            seen.add(name)
            visit(Table(name, defs[name], f"{ROOT_TABLE}.<{name}>", False))
    return order


# -- one key ------------------------------------------------------------------------------------------


def type_text(node: dict[str, Any], by_name: dict[str, Table]) -> str:
    if node is True or node == {}:
        return "any value"
    if "$ref" in node:
        table = by_name[resolve(node["$ref"])]
        kind = "array of tables" if table.array else "table"
        return f"{kind} [{code(table.header)}]({table.anchor})"
    if "anyOf" in node:
        return "; or ".join(type_text(branch, by_name) for branch in node["anyOf"])
    if "const" in node:
        return code(toml_value(node["const"]))
    if "enum" in node:
        return "one of " + ", ".join(code(toml_value(v)) for v in node["enum"])
    kinds = node.get("type")
    if isinstance(kinds, list):
        text = " or ".join(kinds)
    elif kinds == "array":
        items = node.get("items")
        if isinstance(items, dict) and "$ref" in items:
            table = by_name[resolve(items["$ref"])]
            text = f"array of tables [{code(table.header)}]({table.anchor})"
        else:
            inner = type_text(items, by_name) if isinstance(items, dict) else "any value"
            text = f"array of {inner}" if " " not in inner else f"array of ({inner})"
    elif kinds == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and "$ref" in extra:
            table = by_name[resolve(extra["$ref"])]
            text = f"tables [{code(table.header)}]({table.anchor})"
        elif isinstance(extra, dict) and "oneOf" in extra:
            kinds = [by_name[resolve(branch["$ref"])] for branch in extra["oneOf"]]
            text = "tables, one model per `kind`: " + ", ".join(
                f"[{code(toml_value(t.kind))}]({t.anchor})" for t in kinds
            )
        elif isinstance(extra, dict):
            text = f"table of name → {type_text(extra, by_name)}"
        else:
            text = "table (any keys)" if extra in (True, None) else "table"
    elif kinds is None:
        text = "any value"
    else:
        text = kinds
    constraints = []
    if "exclusiveMinimum" in node:
        constraints.append(f"> {toml_value(node['exclusiveMinimum'])}")
    if node.get("minItems") == 1 or node.get("minLength") == 1 or node.get("minProperties") == 1:
        constraints.append("non-empty")
    elif any(k in node for k in ("minItems", "minLength", "minProperties")):
        least = node.get("minItems", node.get("minLength", node.get("minProperties")))
        constraints.append(f"at least {least}")
    if "examples" in node and kinds == "string":
        constraints.append("e.g. " + ", ".join(code(toml_value(v)) for v in node["examples"]))
    elif "pattern" in node:
        constraints.append(f"matching {code(node['pattern'])}")
    return text + (", " + ", ".join(constraints) if constraints else "")


def key_row(key: str, prop: dict[str, Any], required: bool, by_name: dict[str, Table]) -> str:
    name = code(key) + (" (required)" if required else "")
    default = code(toml_value(prop["default"])) if "default" in prop else "–"
    text = prose(prop.get("description", ""))
    if "examples" in prop and prop.get("type") != "string":
        text += " Example: " + ", ".join(code(toml_value(v)) for v in prop["examples"]) + "."
    unrendered = {k: v for k, v in prop.items() if k not in RENDERED}
    if unrendered:
        text += " Schema: " + code(json.dumps(unrendered, sort_keys=True)) + "."
    return f"| {cell(name)} | {cell(type_text(prop, by_name))} | {cell(default)} | {cell(text)} |"


# -- conditions (if / then / else) -------------------------------------------------------------------


def condition_text(node: dict[str, Any]) -> str | None:
    props = node.get("properties", {})
    if set(node) <= {"properties", "required"} and props and all(set(p) == {"const"} for p in props.values()):
        return " and ".join(code(f"{k} = {toml_value(p['const'])}") for k, p in props.items())
    return None


def clause_text(node: dict[str, Any]) -> str | None:
    parts = []
    if set(node) - {"required", "not"}:
        return None
    if node.get("required"):
        parts.append("requires " + ", ".join(code(k) for k in node["required"]))
    if "not" in node:
        branches = node["not"].get("anyOf", [node["not"]])
        if set(node["not"]) - {"anyOf", "required"} or any(set(b) != {"required"} for b in branches):
            return None
        parts.append("does not take " + ", ".join(code(k) for b in branches for k in b["required"]))
    return "; ".join(parts)


def conditions(node: dict[str, Any]) -> list[str]:
    if "if" not in node:
        return []
    when, then, other = condition_text(node["if"]), clause_text(node.get("then", {})), clause_text(node.get("else", {}))
    if when is None or then is None or other is None:
        raw = {k: node[k] for k in ("if", "then", "else") if k in node}
        return ["Conditions (as in the schema):", "", "```json", json.dumps(raw, indent=2, sort_keys=True), "```"]
    lines = [f"- With {when}: {then or 'no further rule'}."]
    if "else" in node:
        lines.append(f"- Otherwise: {other or 'no further rule'}.")
    return lines


# -- the page -----------------------------------------------------------------------------------------


def table_intro(table: Table) -> list[str]:
    description = prose(table.node.get("description", "")).strip()
    # Descriptions start with their own header (``[tool.wheelflow.x]``: ...): the heading says it.
    description = re.sub(r"^`\[\[?[^`]*\]\]?`[:.]?\s*", "", description)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", description) if p.strip()]
    if paragraphs:
        paragraphs[0] = paragraphs[0][:1].upper() + paragraphs[0][1:]
    out: list[str] = []
    for paragraph in paragraphs:
        out += [paragraph, ""]
    return out


def render(schema: dict[str, Any]) -> str:
    """The generated block (without the markers)."""
    order = tables(schema)
    by_name = {t.name: t for t in order if t.name}
    lines = [
        "<!-- Generated from wheelflow.schema.json by `python tools/spec_reference.py`; edit the schema's",
        "     source and regenerate both, never this block by hand. -->",
        "",
        "Tables: " + ", ".join(f"[{t.heading}]({t.anchor})" for t in order) + ".",
        "",
    ]
    for table in order:
        lines += [f"## {table.heading}", ""]
        lines += table_intro(table)
        props = table.node.get("properties", {})
        required = set(table.node.get("required", []))
        if props:
            lines += ["| key | type | default | description |", "|---|---|---|---|"]
            lines += [key_row(key, prop, key in required, by_name) for key, prop in props.items()]
            lines.append("")
        cond = conditions(table.node)
        if cond:
            lines += cond + [""]
        if table.node.get("additionalProperties") is False:
            lines += ["No other key is accepted.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_file(current: str | None, schema: dict[str, Any]) -> str:
    """The whole page: the text around the markers as it is, the block between them regenerated."""
    text = current if current is not None and BEGIN in current and END in current else FRAME
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render(schema)}{END}{tail}"


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
    if current is not None and (BEGIN in current) != (END in current):
        print(f"{OUTPUT.relative_to(ROOT)}: has one of {BEGIN} / {END} but not the other", file=sys.stderr)
        return 1
    page = render_file(current, load_schema())
    if args == ["--check"]:
        if page != current:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run `python tools/spec_reference.py`", file=sys.stderr)
            return 1
        return 0
    if args:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(page, encoding="utf-8")
    print(f"{OUTPUT.relative_to(ROOT)}: {len(tables(load_schema()))} tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
