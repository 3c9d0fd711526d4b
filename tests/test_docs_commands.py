"""Every command the docs give is checked against the code (tests/doc_commands.py), and the blocks marked to run
are run: a command that changes, or an option that goes, breaks a test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from doc_commands import DOC_FILES, ROOT, bash_blocks, check_command, commands

BLOCKS = [block for path in DOC_FILES for block in bash_blocks(path)]


def test_the_docs_have_their_bash_blocks():
    assert len(BLOCKS) > 50 and {b.path.name for b in BLOCKS} >= {"README.md", "lifecycle.md", "own_data.md"}


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_matches_the_code(path):
    variables, problems = {"HOME": "/home/user"}, []
    for block in bash_blocks(path):
        for words, code in commands(block.text, variables):
            if block.mark != "not run":
                problems += [f"{block.where}: {problem}" for problem in check_command(words, code)]
    assert not problems, "\n".join(problems)


RUN = [block for block in BLOCKS if block.mark == "run"]


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.where)
def test_blocks_marked_to_run_run_as_written(block, tmp_path):
    """The block as a user pastes it, in an empty folder, with the page's earlier variables (W=$HOME/...)."""
    variables = {"HOME": str(tmp_path)}
    for earlier in bash_blocks(block.path):
        if earlier.line == block.line:
            break
        commands(earlier.text, variables)
    exports = "".join(f"export {name}={value!r}\n" for name, value in variables.items())
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + exports + block.text], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{block.where}:\n{result.stderr[-2000:]}"
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) >= 8, f"{block.where} wrote {len(written)} files"  # every block marked run makes data


def test_marked_blocks_exist():
    assert {b.path.name for b in RUN} >= {"synthetic.md", "own_data.md"}


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
