"""The docs cannot go stale (issue 17): the CLI reference is the parser's, every command shown in a
```bash block parses, the cheap ones (digits, dry runs, listings) run, the README's Python runs."""
import contextlib
import importlib.util
import os
import re
import shlex
from pathlib import Path

import pytest

from resattn.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _gen_cli_docs():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def _commands(page: Path) -> list[list[str]]:
    """Each resattn command line of the page's ```bash blocks as argv after ``resattn``
    (continuation lines joined, comments dropped)."""
    out = []
    for block in _blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["resattn"]:
                out.append(words[1:])
            elif words[:3] == ["python", "-m", "resattn"]:
                out.append(words[3:])
    return out


ALL = [(page, argv) for page in PAGES for argv in _commands(page)]


def test_cli_reference_is_generated_from_the_parser():
    gen = _gen_cli_docs()
    assert (ROOT / "docs" / "cli.md").read_text() == gen.render(), \
        "docs/cli.md is out of date: run python tools/gen_cli_docs.py"


def test_every_command_and_flag_is_in_the_cli_reference():
    text = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert f"## resattn {name}" in text
        for a in p._actions:
            for flag in a.option_strings:
                assert flag in ("-h", "--help") or f"`{flag}" in text, (name, flag)


def test_the_docs_show_commands():
    pages = {page.name for page, _ in ALL}
    assert {"README.md", "train-and-compare.md", "ray.md", "export.md", "retrofit.md",
            "advise.md", "studies-and-evidence.md"} <= pages
    assert len(ALL) >= 30


@pytest.mark.parametrize("page, argv", ALL, ids=[f"{p.name}:{' '.join(a)[:60]}" for p, a in ALL])
def test_doc_command_parses(page, argv, capsys):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{page.name}: `resattn {' '.join(argv)}` does not parse: "
                    f"{capsys.readouterr().err.strip()} (exit {e.code})")
    assert callable(args.func)


def _cheap(argv: list[str], cwd: Path) -> bool:
    """Runs in seconds: on digits, a dry run, a study listing (no --budget), or a command on a
    folder an earlier command of the page made."""
    if "--dataset" in argv and argv[argv.index("--dataset") + 1] == "digits":
        return True
    if argv[0] == "study":
        return "--dry-run" in argv or "--budget" not in argv
    return argv[0] == "inspect" and (cwd / argv[1]).is_dir()


@contextlib.contextmanager
def _in(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.mark.parametrize("page", [p for p in PAGES if any(a for q, a in ALL if q == p)],
                         ids=lambda p: p.name)
def test_cheap_doc_commands_run(page, tmp_path, capsys):
    (tmp_path / "studies").symlink_to(ROOT / "studies")
    ran = []
    with _in(tmp_path):
        for argv in _commands(page):
            if _cheap(argv, tmp_path):
                code = main([*argv, "--no-progress"] if argv[0] in ("train", "compare") else argv)
                assert code == 0, f"{page.name}: `resattn {' '.join(argv)}` exited {code}: " \
                                  f"{capsys.readouterr().err[-2000:]}"
                ran.append(argv[0])
    if page.name in ("README.md", "train-and-compare.md", "advise.md"):
        assert ran, f"{page.name} shows no command that runs in the tests"


def test_readme_python_example_runs():
    code = _blocks(ROOT / "README.md", "python")[0]
    exec(compile(code, "README.md", "exec"), {})


def test_layout_page_python_runs_and_says_what_it_gives():
    ns = {}
    exec(compile(_blocks(ROOT / "docs" / "layout.md", "python")[0], "layout.md", "exec"), ns)
    assert ns["cfg"].path("skip").gamma_max == 0.5 and list(ns["cfg"].paths()) == ["skip", "res"]


def test_readme_fits_on_a_screen():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 120


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_local_links_point_at_files(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = target.split("#")[0]
        assert (page.parent / path).exists(), f"{page.name}: link to {target} points at nothing"
