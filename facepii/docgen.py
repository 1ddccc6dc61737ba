"""Generate docs/reference.md from the registries, so the reference cannot drift from the code.

    python -m facepii.docgen > docs/reference.md

A test compares the committed file with this output.
"""

from __future__ import annotations

import inspect
import sys

import attacks  # noqa: F401  (registers the built-in attacks)
import defenses  # noqa: F401  (registers the built-in defenses)
from attacks.facemodel import BUDGETS
from facepii.gate import RULES
from facepii.registry import attacks as areg
from facepii.registry import defenses as dreg
from facepii.registry import encoders as ereg
from facepii.registry import oracles as oreg


def _params(cls) -> list[tuple[str, str]]:
    sig = inspect.signature(cls.__init__)
    out = []
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = "" if p.default is inspect.Parameter.empty else repr(p.default)
        out.append((p.name, default))
    return out


def _module_doc(obj) -> str:
    mod = sys.modules.get(getattr(obj, "__module__", ""), None)
    return inspect.getdoc(mod) or "" if mod else ""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _entries(registry) -> list[str]:
    """A section per built-in entry: its help line, its parameters and its module's docstring."""
    lines: list[str] = []
    for e in registry.entries():
        if e.origin != "built-in":
            continue
        lines += [f"### `{e.name}`", "", e.help, ""]
        ps = _params(e.factory)
        if ps:
            lines += ["| parameter | default |", "|---|---|"] + [f"| `{n}` | `{d}` |" for n, d in ps] + [""]
        doc = _module_doc(e.factory)
        if doc:
            lines += [doc, ""]
    return lines


def reference() -> str:

    lines = ["# Reference", "",
             "Generated from the registries by `python -m facepii.docgen`; do not edit by hand.", ""]
    lines += ["## Encoders", "", "| name | what it is |", "|---|---|"]
    lines += [f"| `{e.name}` | {_cell(e.help)} |" for e in ereg.entries() if e.origin == "built-in"]
    lines += ["", "## Defenses", "",
              "Pass parameters with `--param NAME=V1,V2` (chains: `--param step.NAME=...`).", ""]
    lines += _entries(dreg)
    lines += ["## Attacks", "", "`--attack NAME[,NAME]`; the row reports the worst (highest rank-1).", ""]
    lines += _entries(areg)
    lines += ["## Oracle attacks", "", "`--oracle NAME` (`--oracle-queries N` per victim; the default is each one's):",
              "", "| name | what the matcher answers | default queries |", "|---|---|---|"]
    lines += [f"| `{e.name}` | {_cell(e.factory.answers)} | {e.factory.default_queries} |"
              for e in oreg.entries() if e.origin == "built-in"]
    lines.append("")
    lines += ["## Attack budgets", "", "`--budget NAME`:", "",
              "| budget | face-space dims | decoder steps | fine-tune steps | optimize steps | mirror aug. | "
              "NES steps x samples |", "|---|---|---|---|---|---|---|"]
    for b in BUDGETS.values():
        lines.append(f"| `{b.name}` | {b.components} | {b.decoder_steps} | {b.finetune_steps} | "
                     f"{b.optimize_steps} | {b.flips} | {b.nes_steps} x {b.nes_samples} |")
    lines += ["", "## Gate rules", "", "| rule | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in RULES.items()]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(reference())
