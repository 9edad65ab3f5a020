"""The evidence page: ``resattn evidence RUNS_DIR... --out docs/evidence.md``.

Reads finished study folders (``study.json`` written by :func:`resattn.workflow.study.run_study`). The page
opens with "When to choose pattern 4": each clause of the pattern's decision rule
(:data:`RULE_CLAUSES`) next to the verdicts that speak to it (budget, n, effect, CI, validity), or
"not tested". Then one section per study: the claim, the validity line, the decision rule, the
table (n, Δ, CI, Holm-adjusted p-values, outcome), per-group values, a plot (copied to
``<page folder>/evidence/``), the verdict, the command, the machine, precision and wall time.
Every number on the page is read from those files; a folder without ``study.json`` is refused.
Verdicts of a ``smoke`` budget are marked as such and never answer a clause.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

__all__ = ["build_evidence", "RULE_CLAUSES"]

#: The decision rule of pattern 4 (the pattern's own description, as issue 14 lists it), clause by
#: clause, with the study hypotheses (study name, 1-based hypothesis number) that speak to it and
#: what they leave open.
RULE_CLAUSES: list[tuple[str, list[tuple[str, int]], str]] = [
    ("Choose it on a backbone that already trains stably",
     [("placement", 2), ("data-regime", 3)],
     "dual vs plain where plain trains (ResNet-20, clean data)"),
    ("Put it in the middle and late stages",
     [("placement", 1), ("placement", 2)], "stages 2-3 vs every stage, and vs plain"),
    ("Choose it to lift an accuracy ceiling (longer training)",
     [("ceiling", 1), ("ceiling", 2)], "dual vs branch / pre at the longer budget"),
    ("Avoid it on small or noisy data",
     [("data-regime", 1), ("data-regime", 2), ("data-regime", 4)],
     "plain / branch vs dual with 1k images or 20% flipped labels"),
    ("Keep early layers plain",
     [("placement", 3)], "plain vs dual in stage 1 only"),
    ("Avoid it when the loss is already unstable",
     [("skip-form", 2), ("skip-form", 3), ("skip-form", 4)],
     "partly: near-identity vs gated skip at depth 56 and lr 0.4; dual vs plain on an unstable "
     "backbone is not tested"),
]


#: A budget that checks the plumbing (a few images, one epoch): its verdicts are no evidence.
SMOKE_NOTE = "smoke budget: a plumbing check, not evidence"


def _verdict(doc: dict[str, Any], h: dict[str, Any]) -> str:
    """``**supported**``, or ``**supported** (smoke budget: a plumbing check, not evidence)``."""
    return f"**{h['verdict']}**" + (f" ({SMOKE_NOTE})" if doc.get("budget") == "smoke" else "")


def _section(doc: dict[str, Any], folder: Path, plot_dir: Path, page_dir: Path) -> list[str]:
    from .study import cell_line
    smoke = doc.get("smoke") or doc["budget"] == "smoke"
    md = [f"## {doc['name']} — budget `{doc['budget']}`" + (" (smoke: not evidence)" if smoke else ""), "",
          f"**Claim.** {doc['claim']}", "",
          f"**Validity.** {doc.get('validity_line', 'not checked (made before validity gates)')}", "",
          f"**Rule.** {doc['rule']}", ""]
    if doc.get("changes"):
        md += ["**Changes after registration:** " + "; ".join(map(str, doc["changes"])), ""]
    md += ["| hypothesis | cell | n | Δ [CI] | p (Holm) | p equiv. (Holm) | outcome |",
           "|---|---|---|---|---|---|---|"]
    for h in doc["hypotheses"]:
        for c in h["cells"] or [{"cell": {}, "n": 0, "diff": None, "outcome": "no pairs"}]:
            cell = ", ".join(f"{k}={v}" for k, v in c["cell"].items()) or "(all)"
            md.append(f"| {h['hypothesis']} | {cell} | {c['n']} | {cell_line(c)} | "
                      f"{_p(c.get('p_diff_adj'))} | {_p(c.get('p_equiv_adj'))} | {c['outcome']} |")
    md += ["", "| metric | cell | variant | runs | diverged | untrained | mean ± std (n) |",
           "|---|---|---|---|---|---|---|"]
    shown = set()
    for h in doc["hypotheses"]:
        if h["metric"] in shown:  # the same metric gives the same per-group values
            continue
        shown.add(h["metric"])
        for row in h["table"]:
            cell = ", ".join(f"{k}={v}" for k, v in row["cell"].items()) or "(all)"
            spread = ("-" if row.get("mean") is None else
                      f"{row['mean']:.3f} ± {row['std']:.3f} (n={row['n']})" if row.get("std") is not None
                      else f"{row['mean']:.3f} (n={row['n']})")
            md.append(f"| {h['metric']} | {cell} | {row['variant']} | {row['runs']} | "
                      f"{row['diverged']} | {row.get('untrained', '-')} | {spread} |")
    md.append("")
    for key in ("accuracy", *[k for k in doc.get("plots", {}) if k.startswith("hypothesis")]):
        name = doc.get("plots", {}).get(key)
        if name and (folder / name).exists():
            dest = plot_dir / f"{doc['name']}-{doc['budget']}-{name}"
            shutil.copyfile(folder / name, dest)
            md += [f"![{doc['name']} {key}]({dest.relative_to(page_dir).as_posix()})", ""]
    verdicts = "; ".join(f"hypothesis {i}: {_verdict(doc, h)}"
                         for i, h in enumerate(doc["hypotheses"], 1))
    md += [f"**Verdict.** {verdicts}.", "",
           f"Command: `{doc['command']}`  ",
           f"Runs trained on: {', '.join(doc.get('run_devices') or ['-'])} "
           f"({'; '.join(doc.get('run_machines') or ['-'])}); precision: "
           f"{', '.join(doc.get('precision') or ['-'])}  ",
           f"Training time: {doc.get('train_time_s', 0):.0f} s summed over the runs; "
           + ("report written afterwards from the run cache (`--report-only`) on "
              f"{doc['machine']}  " if doc.get("report_only") else
              f"wall time of the grid {doc['wall_time_s']:.0f} s on {doc['machine']}, torch "
              f"{doc['torch']}  "),
           f"Runs: {doc['runs']} ({doc['finished']} finished, {doc['diverged']} diverged, "
           f"{doc.get('untrained', '-')} untrained, {doc['failed']} failed or not run)", ""]
    return md


def _speaks(h: dict[str, Any]) -> tuple[str, str]:
    """(n, effect [CI]) of a hypothesis for the clause table: its one cell, or a per-cell list."""
    from .study import cell_line
    cells = h["cells"]
    if not cells:
        return "0", "-"
    if len(cells) == 1:
        return str(cells[0]["n"]), cell_line(cells[0])
    parts = [", ".join(f"{k}={v}" for k, v in c["cell"].items()) + f": {cell_line(c)} ({c['outcome']})"
             for c in cells]
    return f"{min(c['n'] for c in cells)}–{max(c['n'] for c in cells)}", "; ".join(parts)


def rule_table(docs: list[dict[str, Any]]) -> list[str]:
    """The "When to choose pattern 4" section: each clause and the verdicts that speak to it."""
    from .study import validity_word
    by_name: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_name.setdefault(d["name"], []).append(d)
    md = ["## When to choose pattern 4", "",
          "Each clause of the pattern's decision rule, next to the pre-registered hypotheses that "
          "speak to it. A verdict names the first variant's side (better / worse), equivalent "
          "(within ±δ), inconclusive, invalid (the study's baseline missed its floor) or "
          "incomplete. Smoke-budget results are never counted here.", "",
          "| clause | hypothesis | budget | verdict | n | Δ [95% CI] | validity |", "|---|---|---|---|---|---|---|"]
    for clause, refs, scope in RULE_CLAUSES:
        rows = []
        for name, i in refs:
            for d in by_name.get(name, []):
                if d.get("smoke") or d["budget"] == "smoke" or i > len(d["hypotheses"]):
                    continue
                h = d["hypotheses"][i - 1]
                n, eff = _speaks(h)
                valid = validity_word(d.get("validity"))
                rows.append(f"| {clause} ({scope}) | {name} #{i}: {h['hypothesis']} | {d['budget']} | "
                            f"**{h['verdict']}** | {n} | {eff} | "
                            f"{valid} |")
        md += rows or [f"| {clause} ({scope}) | **not tested** (no finished non-smoke study "
                       f"among {', '.join(sorted({n for n, _ in refs}))}) | - | - | - | - | - |"]
    return md + [""]


def _p(p: Any) -> str:
    return "-" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def build_evidence(folders: Sequence[str | Path], out: str | Path = "docs/evidence.md") -> Path:
    """Write the evidence page from finished study folders; returns its path.

    Raises:
        ValueError: a folder has no ``study.json`` (not a finished study).
    """
    from .study import validity_word
    out = Path(out)
    docs = []
    for f in folders:
        path = Path(f) / "study.json"
        if not path.is_file():
            raise ValueError(f"{f}: no study.json; run `resattn study FILE --out {f}` to the end first")
        docs.append((Path(f), json.loads(path.read_text())))
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_dir = out.parent / "evidence"
    plot_dir.mkdir(exist_ok=True)
    md = ["# Evidence: what the shipped studies found", "",
          "Generated by `resattn evidence` from finished study folders; every number is read from "
          "their `study.json`. Each study was registered (claim, hypothesis, decision rule, grid, "
          "budgets) in `studies/` before it ran. A claim that is not supported is reported as such.", "",
          "Verdicts: better / worse (the first-named variant's side), equivalent (within the "
          "pre-registered δ by two one-sided tests), inconclusive, invalid (a validity floor "
          "missed), incomplete (a run of a pair failed or has not run yet). Holm's adjustment controls the "
          "family-wise error within each study, not across the page. Smoke-budget verdicts are "
          "marked and are not evidence.", "",
          ] + rule_table([d for _, d in docs]) + [
          "## All verdicts", "",
          "| study | budget | hypothesis | verdict | validity | trained on | training time (summed) |",
          "|---|---|---|---|---|---|---|"]
    for _, d in docs:
        valid = validity_word(d.get("validity"))
        for h in d["hypotheses"]:
            md.append(f"| {d['name']} | {d['budget']} | {h['hypothesis']} | {_verdict(d, h)} | "
                      f"{valid} | "
                      f"{', '.join(d.get('run_devices') or ['-'])} | "
                      f"{d.get('train_time_s', 0):.0f} s |")
    md.append("")
    for folder, d in docs:
        md += _section(d, folder, plot_dir, out.parent)
    out.write_text("\n".join(md))
    return out
