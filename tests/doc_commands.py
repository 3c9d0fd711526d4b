"""The shell commands the docs tell a user to run, read from their fenced bash blocks, and checked against the code.

Each block is checked command by command, statically, against what the command calls:
- `cellzoo SUB ...` (or `python -m cellzoo.cli`): SUB is a command of `cellzoo.cli.CellzooCLI` and every
  `--option` one of its parameters (fire's rules: dashes are underscores);
- `python -m monai.bundle run ...` (also under torchrun): every config file, meta file and logging file exists,
  and every other `--key` is an id of the merged config, as MONAI's runner would resolve it;
- `python -m monai.bundle OTHER ...`: OTHER is a function of `monai.bundle` taking every option given;
- `python scripts/X.py ...`: the script exists and declares every option given;
- `make T`: T is a target of the Makefile; `python -c CODE` / `python - <<EOF`: the code compiles and every
  name it imports from cellzoo exists.
A command of any other program fails the check unless the block is marked, on the line before its fence,
`<!-- doctest: not run (why) -->`. A block marked `<!-- doctest: run -->` is also executed (tests/test_docs_commands.py);
`<!-- doctest: run (DIR=cellseg, IMAGES=ctc/01, annotations.json=coco_train.json) -->` runs it with each
placeholder replaced: by a tiny synthetic data set of that `cellzoo synth` layout (or a folder in it), or, when
the value names no layout, by the value itself. Every block carries one of the two marks.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "bundles").glob("*/docs/README.md")])
MARK = re.compile(r"<!--\s*doctest:\s*(run|not run)\b([^>]*)-->")
# programs a user runs that have nothing of cellzoo's to check (their own options are theirs)
PLAIN_PROGRAMS = {"cd", "source", "find", "sha256sum", "mlflow", "pip", "ls", "cat", "git", "gh"}
# options every monai.bundle run accepts besides config ids
RUNNER_FILES = ("config_file", "meta_file", "logging_file")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    text: str
    mark: str | None  # "run", "not run" or None
    placeholders: dict[str, str]  # a run block's NAME -> synthetic layout[/folder] or literal text

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def bash_blocks(path: Path) -> list[Block]:
    lines, blocks, start, mark = path.read_text().splitlines(), [], None, None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```bash":
            previous = next((lines[i] for i in range(number - 2, -1, -1) if lines[i].strip()), "")
            found = MARK.search(previous)
            start, mark = number, found.group(1) if found else None
            placeholders = _placeholders(found.group(2)) if mark == "run" else {}
        elif start is not None and line.strip() == "```":
            blocks.append(Block(path, start, "\n".join(lines[start:number - 1]), mark, placeholders))
            start = None
    return blocks


def _placeholders(text: str) -> dict[str, str]:
    """`(A=b, C=d/e)` -> {"A": "b", "C": "d/e"}."""
    inner = text.strip().removeprefix("(").removesuffix(")").strip()
    return dict(item.strip().split("=", 1) for item in inner.split(",")) if inner else {}


def commands(text: str, variables: dict[str, str]) -> list[tuple[list[str], str | None]]:
    """The block's commands as argument lists (with the python code of a heredoc), shell variables expanded;
    `NAME=value` lines set `variables` (they carry over to later blocks of the same page)."""
    logical, heredoc = [], None
    for line in text.replace("\\\n", " ").splitlines():
        if heredoc is not None:
            if line.strip() == heredoc[0]:
                logical.append((heredoc[1], "\n".join(heredoc[2])))
                heredoc = None
            else:
                heredoc[2].append(line)
            continue
        found = re.search(r"<<\s*'?(\w+)'?", line)
        if found:
            heredoc = (found.group(1), line[:found.start()], [])
            continue
        logical.append((line, None))
    out = []
    for line, code in logical:
        words = shlex.split(_expand(line, variables), comments=True)
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):  # NAME=value, alone or before a command
            name, value = words.pop(0).split("=", 1)
            if not words:
                variables[name] = value
        words = [_unbracket(w) for w in words]
        if words and words[0] not in ("for", "done"):
            out.append(([w for w in words if w not in ("...", "")], code))
    return out


def _unbracket(word: str) -> str:
    """`[--quick]`, `[--procedure head_eval]`: an optional part, written in brackets (a list literal keeps them)."""
    if word.startswith("[--"):
        word = word[1:]
    return word[:-1] if word.endswith("]") and "[" not in word else word


def _expand(line: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: variables.get(m.group(1) or m.group(2), "VALUE"), line)


def options(words: list[str]) -> dict[str, str | None]:
    """--name value / --name=value pairs (a following option or nothing gives None)."""
    found = {}
    for i, word in enumerate(words):
        if word.startswith("--") and len(word) > 2:
            name, _, value = word[2:].partition("=")
            following = words[i + 1] if i + 1 < len(words) else None
            found[name] = value or (following if following is not None and not following.startswith("--") else None)
    return found


def positionals(words: list[str]) -> list[str]:
    """The arguments that are neither options nor option values."""
    out, skip = [], False
    for word in words:
        if word.startswith("--"):
            skip = "=" not in word
            continue
        if skip:
            skip = False
            continue
        out.append(word)
    return out


# ---- checks: each returns a list of problems (empty: fine) ----
def check_command(words: list[str], code: str | None) -> list[str]:
    program = Path(words[0]).name
    if program in ("python", "python3") or program.startswith("python3."):
        return _check_python(words[1:], code)
    if program == "cellzoo":
        return check_cellzoo(words[1:])
    if program == "torchrun":
        module = words.index("-m") if "-m" in words else None
        return ["torchrun without -m"] if module is None else _check_python(words[module:], None)
    if program == "make":
        return check_make(words[1:])
    if program in PLAIN_PROGRAMS:
        return []
    return [f"{program}: not a command the doc test can check; mark the block <!-- doctest: not run (why) -->"]


def _check_python(words: list[str], code: str | None) -> list[str]:
    if words[:2] == ["-m", "cellzoo.cli"]:
        return check_cellzoo(words[2:])
    if words[:2] == ["-m", "monai.bundle"]:
        return check_monai(words[2:])
    if words[:1] == ["-c"]:
        return check_code(words[1])
    if words[:1] == ["-"] and code is not None:
        return check_code(code)
    if words and words[0].endswith(".py"):
        return check_script(words[0], words[1:])
    if words[:2] == ["-m", "venv"]:
        return []
    return [f"python {' '.join(words[:2])}: not a command the doc test can check"]


def check_cellzoo(words: list[str]) -> list[str]:
    from cellzoo.cli import CellzooCLI

    target, rest = CellzooCLI(), list(words)
    if not rest or rest[0] in ("--help", "-h"):
        return []
    while rest and not inspect.ismethod(target):  # a command, or a group of them (evaluate, benchmark)
        name = rest[0].replace("-", "_")
        if name.startswith("_") or not hasattr(target, name):
            break
        target = getattr(target, rest.pop(0).replace("-", "_"))
    if not inspect.ismethod(target):
        return [f"cellzoo {' '.join(positionals(words)[:2])}: no such command"]
    parameters = inspect.signature(target).parameters
    problems = [f"cellzoo {target.__name__}: no option --{name}" for name in options(rest)
                if name.replace("-", "_") not in parameters]
    if len(positionals(rest)) > len(parameters):
        problems.append(f"cellzoo {target.__name__}: too many arguments {positionals(rest)}")
    return problems


def _bundle_file(path: str) -> Path:
    """A path the docs give; a downloaded bundle's (bundles_dl/NAME/...) is checked as the bundle's own."""
    path = re.sub(r"^bundles_dl/", "bundles/", path)
    return ROOT / path


def check_monai(words: list[str]) -> list[str]:
    if not words:
        return ["monai.bundle without a command"]
    given = options(words[1:])
    if words[0] != "run":
        import monai.bundle

        function = getattr(monai.bundle, words[0], None)
        if function is None:
            return [f"monai.bundle {words[0]}: no such command"]
        parameters = inspect.signature(function).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        return [] if takes_any else [f"monai.bundle {words[0]}: no option --{name}" for name in given
                                     if name not in parameters]
    from monai.bundle import ConfigParser

    if not given.get("config_file"):
        return ["monai.bundle run without --config_file"]
    value = given["config_file"]
    files = ast.literal_eval(value) if value.startswith("[") else [value]
    problems = [f"missing file {f}" for key in RUNNER_FILES if given.get(key)
                for f in (files if key == "config_file" else [given[key]]) if not _bundle_file(f).is_file()]
    if problems:
        return problems
    parser = ConfigParser()
    parser.read_config([str(_bundle_file(f)) for f in files])
    known = set(RUNNER_FILES) | {"tracking"}
    if given.get("tracking") == "mlflow":  # the runner adds MONAI's tracking settings (run_name, ...)
        from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

        known |= set(DEFAULT_MLFLOW_SETTINGS["configs"])
    return [f"monai.bundle run: --{name} is no id of {', '.join(Path(f).name for f in files)}"
            for name in given if name not in known and name not in parser]


def check_script(script: str, words: list[str]) -> list[str]:
    path = ROOT / script
    if not path.is_file():
        return [f"missing script {script}"]
    source = path.read_text()
    return [f"{script}: declares no option --{name}" for name in options(words)
            if f'"--{name}"' not in source and f"'--{name}'" not in source]


def check_make(words: list[str]) -> list[str]:
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    return [f"make {word}: no such target" for word in words if not word.startswith("-") and word not in targets]


def check_code(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        return [f"python code does not compile: {err}"]
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cellzoo":
            module = importlib.import_module(node.module)
            problems += [f"{node.module} has no {alias.name}" for alias in node.names if not hasattr(module, alias.name)]
    return problems
