"""Sphinx configuration of the optimisers documentation.

The API pages are built from the docstrings of the *installed* package (autodoc imports
``optimisers``; install it first, see build.sh).  The pages that follow the library are
written here at each build, into ``generated/`` (not tracked): one page per rule class of
``opt.RULES``, grouped by the module that defines it, and one page per script of
``examples/``, so that a new rule or example needs no page written by hand.  Three checks
warn (errors under ``-W``): a rule whose docstring has no maths, a public name of
``optimisers`` or ``optimisers.schedules`` that no page documents, and a docs/requirements.txt
that lists other tools than pyproject's ``docs`` extra.
"""

import ast
import sys
from pathlib import Path

from sphinx.util import logging

import optimisers as opt
from optimisers import schedules

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
log = logging.getLogger("optimisers.docs")

# -- project ---------------------------------------------------------------------------------
project = "optimisers"
author = "the optimisers developers"
copyright = "2026, the optimisers developers"
release = opt.__version__  # meson.build's, through the package metadata
version = ".".join(release.split(".")[:2])

# -- tools -----------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",  # the API from the docstrings
    "numpydoc",  # their numpydoc sections (Parameters, Notes, Examples, ...)
    "sphinx.ext.mathjax",  # the rules' update equations (.. math:: and :math:)
    "sphinx.ext.viewcode",  # a link to each documented object's Python source
    "myst_parser",  # CHANGELOG.md and CONTRIBUTING.md, included as they are
]
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "snippets"]
templates_path = []
nitpicky = False  # the docstrings name numpy's types in prose, not as links

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the rules' signatures show their defaults, not "float"
numpydoc_show_class_members = False  # a rule's page is its docstring, not a member table
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"optimisers {release}"
html_theme_options = {
    "description": "Gradient-based optimisation rules for nested numpy models",
    "fixed_sidebar": True,
}
html_static_path = []

# -- pages written at each build ----------------------------------------------------------

#: a rule module's heading on the rules page (a module not named here gets its docstring's
#: first line, so a new family module needs no entry)
FAMILIES = {
    "optimisers._rules_sgd": "Gradient descent, momentum and sign methods",
    "optimisers._rules_adam": "Adam and its relatives",
    "optimisers._rules_adaptive": "Per-element learning rates",
    "optimisers._rules_transform": "Gradient transforms (decay, clipping)",
    "optimisers._composite": "Rules made of rules",
}


def _write(path, text):
    """Write ``text`` to ``path`` unless it is there already (an unchanged page keeps its
    time stamp, so Sphinx does not read it again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _prune(folder, names):
    """Remove the pages of ``folder`` whose rule or example is gone."""
    for page in folder.glob("*.rst"):
        if page.stem not in names:
            page.unlink()


def _title(text, mark="="):
    return f"{text}\n{mark * len(text)}\n"


def _summary(obj):
    doc = (obj.__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ") if doc else ""


def _rule_pages(out):
    families = {}
    for cls in opt.RULES:
        families.setdefault(cls.__module__, []).append(cls)
        _write(
            out / "rules" / f"{cls.__name__}.rst",
            _title(cls.__name__) + "\n.. currentmodule:: optimisers\n\n"
            f".. autoclass:: {cls.__name__}\n",
        )
    lines = []
    for module, classes in families.items():
        heading = FAMILIES.get(module) or _summary(sys.modules[module])
        lines += ["", _title(heading, "-"), ".. list-table::", "   :widths: 25 75", ""]
        for cls in classes:
            lines += [f"   * - :class:`~optimisers.{cls.__name__}`", f"     - {_summary(cls)}"]
        lines += ["", ".. toctree::", "   :hidden:", ""]
        lines += [f"   generated/rules/{cls.__name__}" for cls in classes]
    _write(out / "rule_families.inc", "\n".join(lines) + "\n")
    _prune(out / "rules", {cls.__name__ for cls in opt.RULES})


def _example_pages(out):
    """A page per script: its docstring's first line, then the whole script, docstring
    included (the docstrings are prose for a terminal, not always valid reStructuredText)."""
    names = []
    for script in sorted((ROOT / "examples").glob("*.py")):
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        _write(
            out / "examples" / f"{script.stem}.rst",
            _title(f"examples/{script.name}") + "\n" + doc.split("\n")[0] + "\n\n"
            f".. literalinclude:: ../../../examples/{script.name}\n"
            "   :language: python\n",
        )
        names.append(script.stem)
    _write(
        out / "example_pages.inc",
        ".. toctree::\n   :maxdepth: 1\n\n"
        + "".join(f"   generated/examples/{n}\n" for n in names),
    )
    _prune(out / "examples", names)


def _generate(app):
    out = HERE / "generated"
    _rule_pages(out)
    _example_pages(out)
    _check_requirements()
    for cls in opt.RULES:
        doc = cls.__doc__ or ""
        if ".. math::" not in doc and ":math:`" not in doc:
            log.warning(
                f"the docstring of {cls.__name__} has no update equations "
                "(a '.. math::' block or a :math: role)"
            )


def _resolve(name):
    """The object a dotted name of the package names, or None."""
    obj = opt
    for part in name.split(".")[1:]:
        obj = getattr(obj, part, None)
    return obj


def _check_requirements():
    """docs/requirements.txt (what build.sh installs) and pyproject's ``docs`` extra list
    the same tools."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: not checked
        return
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extra = extra["project"]["optional-dependencies"].get("docs", [])
    listed = [
        line.strip()
        for line in (HERE / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if sorted(extra) != sorted(listed):
        log.warning(f"docs/requirements.txt {listed} and pyproject's docs extra {extra} differ")


def _check_public_names(app, env):
    """Every public name is documented somewhere, under that name or, for a class or a
    function that two modules export (``opt.Schedule``), under another (the warning names
    the pages to add it to)."""
    documented = set(env.get_domain("py").objects)
    documented_ids = {id(o) for o in map(_resolve, documented) if callable(o)}
    wanted = {f"optimisers.{n}" for n in opt.__all__}
    wanted |= {f"optimisers.schedules.{n}" for n in schedules.__all__}
    for name in sorted(wanted - documented):
        if id(_resolve(name)) not in documented_ids:
            log.warning(f"{name} is public but no page documents it (api.rst, schedules.rst)")


def setup(app):
    app.connect("builder-inited", _generate)
    app.connect("env-check-consistency", _check_public_names)
    return {"parallel_read_safe": True}
