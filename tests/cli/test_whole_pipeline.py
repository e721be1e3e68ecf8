"""The whole pipeline through the command line: raw -> prepare -> split -> augment -> train -> evaluate -> infer.

conftest's ``pipeline`` runs each command in-process on a tiny raw set (grey, RGBA and 16-bit slices among
RGB ones) and hashes every command's inputs before and after it; what each command does is tested with its
module, what the chain shows is tested here.
"""

from __future__ import annotations

import pytest

from conftest import leftovers


def test_pipeline_commands_succeed(pipeline):
    assert pipeline["rc"] == {"prepare": 0, "split": 0, "augment": 0, "train": 0, "evaluate": 0, "infer": 0}
    root = pipeline["root"]
    assert (root / "models" / "best_model.keras").is_file() and (root / "eval" / "evaluation.json").is_file()
    assert len(list((root / "out").glob("*.png"))) == 2
    assert not leftovers(root)


@pytest.mark.parametrize("command", ["prepare", "split", "train", "evaluate", "infer"])
def test_inputs_are_never_modified(pipeline, command):
    before, after = pipeline["same"][command]
    assert before and after == before
    assert pipeline["raw"][0] == pipeline["raw"][1] and pipeline["config_same"]
