# Copyright 2026 The rgft_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Builds the HTML API reference of rgft_jax from its docstrings (pdoc), and checks them.

    python docs/build_api.py              # writes build/api/index.html (./dev.sh docs)
    python docs/build_api.py --out DIR    # elsewhere
    python docs/build_api.py --check      # build, then exit 1 on any docstring problem
    python docs/build_api.py MODULE ...   # other modules than the public ones

The build renders every public module with pdoc's Google docstring style and math. Two
conventions of this codebase that pdoc does not know are honoured here: Sphinx roles
(``:func:`x```) render as linked code, ``#:`` comments above a module constant are its
docstring (they are what Sphinx autodoc reads too), and the comment after a NamedTuple
field (its shape and dtype, STYLE.md) documents the field.

The check (run by ``tests/docs/api_docs_test.py``) reports, per public symbol (the names in
each module's ``__all__``): a missing or empty rendered docstring (a docstring built with
``+`` is ``None``), an ``Args:`` entry that names no parameter of the signature, a docstring
pdoc cannot convert, and every warning pdoc raises about our modules except its known
type-annotation limitation (NamedTuple signatures under ``from __future__ import
annotations``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import pathlib
import re
import sys
import warnings
from collections.abc import Iterator

#: The modules the reference documents (each with its public sub-modules).
PUBLIC_MODULES = (
    "rgft_jax",
    "rgft_jax.components",
    "rgft_jax.training",
    "rgft_jax.models",
    "rgft_jax.data",
    "rgft_jax.dsca",
    "rgft_jax.adapters",
    "rgft_jax.reporting",
    "rgft_jax.export",
    "rgft_jax.layer_card",
    "rgft_jax.search",
)
DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "build" / "api"  # git-ignored

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const):`~?([^`]+)`")
# pdoc cannot evaluate the string annotations of a NamedTuple's generated __new__ when its
# module uses `from __future__ import annotations`; the rendered signature just keeps them
# as strings. Not a docstring problem.
_BENIGN_WARNINGS = re.compile(r"^Error parsing type annotation ")
_ARGS_SECTION = re.compile(r"^(\s*)Args:\s*$")


def _sphinx_roles_to_code(convert):
    def wrapped(docstring: str, docformat: str, source_file):
        return convert(_ROLE.sub(r"`\1`", docstring), docformat, source_file)

    return wrapped


def _comment_docstrings(module) -> dict[str, str]:
    """``{name: text}`` of the ``#:`` comments right above module-level assignments."""
    try:
        lines = inspect.getsource(module).splitlines()
    except (OSError, TypeError):
        return {}
    out = {}
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z_]\w*)\s*(?::[^=]+)?=", line)
        if not m:
            continue
        comment = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#:"):
            comment.insert(0, lines[j][2:].strip())
            j -= 1
        if comment:
            out[m.group(1)] = " ".join(comment)
    return out


def _comment_docstring(module, name: str) -> str | None:
    """The ``#:`` comment of ``module.name``, following one ``from x import name`` re-export
    (pdoc cannot tell where a re-exported constant was defined)."""
    text = _comment_docstrings(module).get(name)
    if text:
        return text
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    m = re.search(rf"^from ([\w.]+) import {name}\b", source, re.M)
    origin = sys.modules.get(m.group(1)) if m else None
    return _comment_docstrings(origin).get(name) if origin else None


def _walk(doc) -> Iterator:
    yield doc
    for sub in getattr(doc, "submodules", ()):
        yield from _walk(sub)


def load(modules=PUBLIC_MODULES) -> dict:
    """``{module name: pdoc.doc.Module}`` for ``modules`` and their public sub-modules."""
    import pdoc.doc

    docs: dict = {}
    for name in modules:
        for d in _walk(pdoc.doc.Module(importlib.import_module(name))):
            docs.setdefault(d.fullname, d)
    for d in docs.values():
        for member in d.members.values():
            if isinstance(member, pdoc.doc.Variable) and not member.docstring.strip():
                text = _comment_docstring(d.obj, member.name)
                if text:
                    member.docstring = text  # a cached_property: the instance value wins
            elif isinstance(member, pdoc.doc.Class):
                _field_comments(member)
    return docs


def _field_comments(cls) -> None:
    """NamedTuple fields: the ``# shape / dtype`` comment after each field (STYLE.md) replaces
    the generated "Alias for field number N"."""
    try:
        lines = inspect.getsource(cls.obj).splitlines()
    except (OSError, TypeError):
        return
    comments = {}
    for line in lines:
        m = re.match(r"^\s+([A-Za-z_]\w*)\s*:[^#]*#\s*(.+)$", line)
        if m:
            comments[m.group(1)] = m.group(2).strip()
    for sub in cls.own_members:
        if sub.name in comments and sub.docstring.startswith("Alias for field number"):
            sub.docstring = comments[sub.name]


def _documented_args(docstring: str) -> list[str]:
    """Parameter names listed in the Google ``Args:`` section of ``docstring``."""
    lines = docstring.splitlines()
    names = []
    for i, line in enumerate(lines):
        m = _ARGS_SECTION.match(line)
        if not m:
            continue
        indent = None
        for entry in lines[i + 1:]:
            if not entry.strip():
                continue
            width = len(entry) - len(entry.lstrip())
            if width <= len(m.group(1)):
                break
            indent = width if indent is None else indent
            if width == indent:
                name = re.match(r"^\s*\**([A-Za-z_]\w*)\s*(?:\(.*\))?:", entry)
                if name:
                    names.append(name.group(1))
    return names


def problems(docs: dict) -> list[str]:
    """Every docstring problem of the public symbols of ``docs`` (see the module doc)."""
    import pdoc.doc

    out = []
    for mod_name, d in sorted(docs.items()):
        if not d.docstring.strip():
            out.append(f"{mod_name}: module without a docstring")
        submodules = {s.name for s in d.submodules}
        for name in getattr(d.obj, "__all__", ()):
            if name in submodules or inspect.ismodule(getattr(d.obj, name, None)):
                continue
            member = d.members.get(name)
            where = f"{mod_name}.{name}"
            if member is None:
                out.append(f"{where}: in __all__ but not found by pdoc")
                continue
            if not member.docstring.strip():
                if isinstance(member, pdoc.doc.Variable):
                    out.append(f"{where}: no docstring (a '#:' comment above it gives one)")
                else:
                    out.append(f"{where}: no docstring (one built with '+' is None)")
                continue
            out += _args_problems(where, member)
            if isinstance(member, pdoc.doc.Class):
                for sub in member.own_members:
                    if isinstance(sub, pdoc.doc.Function) and not sub.name.startswith("_"):
                        out += _args_problems(f"{where}.{sub.name}", sub)
    return out


def _args_problems(where: str, member) -> list[str]:
    import pdoc.doc

    target = member.obj
    if isinstance(member, pdoc.doc.Class):
        target = member.obj.__init__
    elif not isinstance(member, pdoc.doc.Function):
        return []
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return []  # **kwargs may document any name
    stale = [a for a in _documented_args(member.docstring) if a not in params]
    if not stale:
        return []
    return [f"{where}: Args documents {stale}, not parameters of {list(params)}"]


@contextlib.contextmanager
def _pdoc_configured():
    import pdoc.docstrings
    import pdoc.render

    pdoc.render.configure(docformat="google", math=True, show_source=False,
                          footer_text="rgft_jax API reference")
    convert = pdoc.docstrings.convert
    pdoc.docstrings.convert = _sphinx_roles_to_code(convert)
    try:
        yield
    finally:
        pdoc.docstrings.convert = convert


def build(out: pathlib.Path | str = DEFAULT_OUT, modules=PUBLIC_MODULES) -> list[str]:
    """Writes the HTML reference into ``out``; returns the docstring problems found.

    Args:
      out: the output folder (created).
      modules: the module names to document, with their public sub-modules.

    Returns:
      One line per problem (empty when the docstrings are sound); warnings pdoc raises about
      rgft_jax while rendering are problems too.
    """
    import pdoc.render

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = []
    with _pdoc_configured(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = load(modules)
        found += problems(docs)
        for name, d in docs.items():
            try:
                html = pdoc.render.html_module(d, docs)
            except RuntimeError as e:  # pdoc: "Docstring processing failed ..."
                found.append(f"{name}: cannot render: {e}")
                continue
            target = out / f"{name.replace('.', '/')}.html"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(html, encoding="utf-8")
        (out / "index.html").write_text(pdoc.render.html_index(docs), encoding="utf-8")
        (out / "search.js").write_text(pdoc.render.search_index(docs), encoding="utf-8")
    for w in caught:
        msg = str(w.message)
        if "rgft_jax" in msg and not _BENIGN_WARNINGS.match(msg):
            found.append(f"pdoc warning: {msg.splitlines()[0]}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a public symbol's docstring is missing or broken")
    parser.add_argument("modules", nargs="*", default=list(PUBLIC_MODULES),
                        help="modules to document (default: the public ones)")
    args = parser.parse_args(argv)
    found = build(args.out, tuple(args.modules))
    print(f"API reference: {pathlib.Path(args.out) / 'index.html'}")
    for line in found:
        print(f"docstring problem: {line}")
    return 1 if (found and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
