"""Every command the docs give is checked against the code (tests/doc_commands.py), and the blocks marked to run
are run: a command that changes, or an option that goes, breaks a test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from doc_commands import DOC_FILES, ROOT, bash_blocks, check_command, commands, options

HERE = Path(__file__).resolve().parent
BLOCKS = [block for path in DOC_FILES for block in bash_blocks(path)]


def test_the_docs_have_their_bash_blocks():
    assert len(BLOCKS) > 50 and {b.path.name for b in BLOCKS} >= {"README.md", "lifecycle.md", "own_data.md"}


UNCHECKABLE = "not a command the doc test can check"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_matches_the_code(path):
    """Blocks marked not run are checked too, for the programs the checker knows."""
    variables, problems = {"HOME": "/home/user"}, []
    for block in bash_blocks(path):
        for words, code in commands(block.text, variables):
            problems += [f"{block.where}: {problem}" for problem in check_command(words, code)
                         if block.mark != "not run" or UNCHECKABLE not in problem]
    assert not problems, "\n".join(problems)


def test_every_block_is_run_or_marked_not_run_with_a_reason():
    unmarked = [b.where for b in BLOCKS if b.mark is None]
    no_reason = [b.where for b in BLOCKS if b.mark == "not run" and "(" not in _mark_line(b)]
    assert not unmarked and not no_reason, f"unmarked: {unmarked}; not run without (why): {no_reason}"


def _mark_line(block) -> str:
    lines = block.path.read_text().splitlines()
    return next(lines[i] for i in range(block.line - 2, -1, -1) if lines[i].strip())


RUN = [block for block in BLOCKS if block.mark == "run"]
PAGES = sorted({block.path for block in RUN})
SYNTH_SIZES = {"cellseg": 6, "isl": 6, "ctc": 9, "lightmycells": 6, "coco": 8, "objects": 6}


def _page_param(path: Path):
    slow = any(block.placeholders for block in RUN if block.path == path)
    return pytest.param(path, marks=[pytest.mark.slow] if slow else [], id=str(path.relative_to(ROOT)))


@pytest.mark.parametrize("path", [_page_param(path) for path in PAGES])
def test_blocks_marked_to_run_run_as_written(path, tmp_path, forkserver):
    """A page's run blocks in order, as a user pastes them, from a repository-shaped folder (the bundles the page
    names copied), with the page's variables, its placeholders filled, and the CPU shim of tests/doc_shim.py;
    each block reads what the earlier ones wrote."""
    blocks = [block for block in RUN if block.path == path]
    work = _workspace(tmp_path / "work", blocks)
    env = {**os.environ, "PATH": os.pathsep.join([str(_shims(tmp_path / "shims", forkserver)), os.environ["PATH"]]),
           "CELLZOO_BUNDLES": str(work / "bundles")}
    variables = {"HOME": str(work)}
    for block in bash_blocks(path):
        commands(block.text, variables)  # NAME=value lines carry over, whether the block runs or not
        if block.mark == "run":
            _run_block(block, work, env, variables)


def _run_block(block, work: Path, env: dict, variables: dict) -> None:
    exports = "".join(f"export {name}={value!r}\n" for name, value in variables.items())
    before = {path for path in work.rglob("*") if path.is_file()}
    text = _filled(block)
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + exports + text], cwd=work, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{block.where}:\n{result.stderr[-3000:]}"
    written = {path for path in work.rglob("*") if path.is_file()} - before
    assert written or result.stdout.strip(), f"{block.where} wrote and printed nothing"  # data, or a look at it
    for words, _ in commands(text, dict(variables)):  # shell loop variables read as VALUE: not checked
        given = {key: value for key, value in options(words).items() if value and "VALUE" not in value}
        if given.get("ckpt_dir"):
            assert (work / given["ckpt_dir"] / "model.pt").is_file(), f"{block.where}: no model in {given['ckpt_dir']}"
        for key in ("output_dir", "output", "out"):
            if given.get(key):
                assert any((work / given[key]).rglob("*")), f"{block.where}: nothing in --{key} {given[key]}"


def _workspace(work: Path, blocks: list) -> Path:
    """The bundles the blocks name, copied (runs write into a bundle's folder by default), and their data."""
    text = "\n".join(block.text for block in blocks)
    for name in sorted(set(re.findall(r"bundles/(\w+)", text)) | set(re.findall(r"cellzoo \w+ (\w+_\w+)", text))):
        if (ROOT / "bundles" / name).is_dir():
            shutil.copytree(ROOT / "bundles" / name, work / "bundles" / name)
    work.mkdir(parents=True, exist_ok=True)
    specs = [spec for block in blocks for spec in block.placeholders.values()]
    for layout in {spec.split("/")[0] for spec in specs} & set(SYNTH_SIZES):
        from cellzoo.synthetic import synthesize

        synthesize(layout, SYNTH_SIZES[layout], work / "data" / layout, seed=1, size=(128, 128))
    return work


def _filled(block) -> str:
    text = block.text
    for name, spec in sorted(block.placeholders.items(), key=lambda item: -len(item[0])):  # longest name first
        value = f"data/{spec}" if spec.split("/")[0] in SYNTH_SIZES else spec
        text = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w-])", value, text)
    return text


@pytest.fixture(scope="module")
def forkserver(tmp_path_factory):
    """tests/doc_forkserver.py, started once: MONAI imported once, each command a forked child."""
    path = tmp_path_factory.mktemp("forkserver") / "socket"
    server = subprocess.Popen([sys.executable, str(HERE / "doc_forkserver.py"), "serve", str(path)],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    yield path
    server.kill()
    server.wait()


def _shims(folder: Path, socket_path: Path) -> Path:
    """`python -m monai.bundle run` and `cellzoo` through tests/doc_shim.py, run by the fork server; any other
    python as it is."""
    folder.mkdir(parents=True)
    client = f"{sys.executable} -S {HERE / 'doc_forkserver.py'} {socket_path}"
    (folder / "python").write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "${{1:-}} ${{2:-}} ${{3:-}}" = "-m monai.bundle run" ]; then shift 3; exec {client} bundle-run "$@"; fi\n'
        f'exec {sys.executable} "$@"\n')
    (folder / "cellzoo").write_text(f'#!/usr/bin/env bash\nexec {client} cellzoo "$@"\n')
    for wrapper in folder.iterdir():
        wrapper.chmod(0o755)
    return folder


def test_marked_blocks_exist():
    assert {p.name for p in PAGES} >= {"synthetic.md", "own_data.md"}
    assert {b.path.parent.parent.name for b in RUN if b.path.name == "README.md"} >= {
        p.name for p in (ROOT / "bundles").iterdir() if (p / "docs" / "README.md").is_file()}


def test_the_shim_adds_quick_yaml_and_the_budget_only():
    from doc_shim import cpu_sized

    args = cpu_sized(["--config_file", "['b/c/train.yaml', 'b/c/pretrain.yaml']", "--max_epochs=50", "--x", "1"])
    assert args == ["--x", "1", "--config_file", "['b/c/train.yaml', 'b/c/pretrain.yaml', 'b/c/quick.yaml']",
                    "--max_epochs", "1", "--samples_per_epoch", "2", "--val_interval", "1"]
    assert cpu_sized(["--config_file", "b/c/inference.yaml", "--o", "x"]) == [
        "--o", "x", "--config_file", "['b/c/inference.yaml', 'b/c/quick.yaml']"]


# ---- the checker itself: each kind of mistake a doc can make is caught ----
@pytest.mark.parametrize("line, problem", [
    ("cellzoo predict mediar_cellseg --input a --output b --tile 512", "no option --tile"),
    ("cellzoo segment --input a", "cellzoo segment: no such command"),
    ("cellzoo evaluate instance --pred a --gt b --iou 0.5 --border 2 --threshold 1", "no option --threshold"),
    ("python -m monai.bundle run --config_file bundles/mediar_cellseg/configs/train.yaml --data_dir D",
     "--data_dir is no id of train.yaml"),
    ("python -m monai.bundle run --config_file \"['bundles/mediar_cellseg/configs/train.yaml', "
     "'bundles/mediar_cellseg/configs/fast.yaml']\" --dataset_dir D", "missing file"),
    ("python -m monai.bundle download --name x --source github --repos O/R", "no option --repos"),
    (".venv/bin/python scripts/benchmark_pmc.py --repeats 5 --gpus 2", "declares no option --gpus"),
    ("make bench", "make bench: no such target"),
    ("python -c \"from cellzoo.io import read_everything\"", "cellzoo.io has no read_everything"),
    ("curl -O https://example.org/model.pt", "curl: not a command the doc test can check"),
])
def test_the_checker_catches(line, problem):
    (words, code), = commands(line, {})
    assert any(problem in found for found in check_command(words, code)), check_command(words, code)


def test_the_checker_passes_what_the_code_accepts():
    variables = {}
    text = ("B=bundles/mediar_cellseg/configs\n"
            "python -m monai.bundle run --config_file \"['$B/train.yaml', '$B/quick.yaml']\" \\\n"
            "    --bundle_root bundles/mediar_cellseg --dataset_dir D [--max_epochs 2]   # a comment\n"
            "CELLZOO_BUNDLES=bundles_dl cellzoo predict mediar_cellseg --input I --output O --quick\n"
            "cellzoo benchmark label-efficiency --quick --seeds 0,1 ...\n")
    found = commands(text, variables)
    assert variables == {"B": "bundles/mediar_cellseg/configs"} and len(found) == 3
    assert found[0][0][-2:] == ["--max_epochs", "2"] and found[1][0][0] == "cellzoo"
    assert all(check_command(words, code) == [] for words, code in found)


def test_the_fork_server_gives_each_command_its_exit_code_streams_and_folder(forkserver, tmp_path):
    shims = _shims(tmp_path / "shims", forkserver)
    env = {**os.environ, "PATH": os.pathsep.join([str(shims), os.environ["PATH"]])}
    good = subprocess.run(["bash", "-c", "cellzoo synth --layout cellseg --n 1 --out here --size 32,32"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert good.returncode == 0 and (tmp_path / "here" / "README.txt").is_file()
    bad = subprocess.run(["bash", "-c", "cellzoo synth --layout cellseg --n 1 --out there --size 0,32"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "size" in bad.stderr and not (tmp_path / "there").exists()
