"""The ownership rule (flexunet.utils.outputs): each rule on small folders, no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import snapshot
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.outputs import (OWNER_FILE, atomic_output_dir, check_output_dir, check_output_file, check_whole_dir,
                              claim_output_dir, claim_output_file, folder_owners, is_run_folder, owner_of)


def test_overlap_with_an_input_is_resolved_through_links_and_dot(tmp_path, monkeypatch):
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    (tmp_path / "link").symlink_to(images)
    monkeypatch.chdir(images)
    for out, relation in [(tmp_path / "link", "is"), (Path("."), "is"), (images / "sub", "is inside"),
                          (tmp_path / "data", "contains")]:
        with pytest.raises(FlexUNetError, match=f"{relation} the input folder .*\\(\\[train\\] images_dir\\)"):
            check_output_dir(out, "infer", [("[train] images_dir", images)], overwrite=True)
        with pytest.raises(FlexUNetError, match=f"{relation} the input folder"):
            check_whole_dir(out, "split", True, "[split] output_dir/name", [images])
    check_output_dir(tmp_path / "elsewhere", "infer", [images])   # a new folder outside: fine


def test_other_commands_outputs_are_never_replaced(tmp_path):
    out = tmp_path / "out"
    claim_output_dir(out, "train", ["history.json"])
    (out / "history.json").write_text("{}")
    check_output_dir(out, "evaluate", shares_with=("train",))          # evaluate beside train's curves
    with pytest.raises(FlexUNetError, match="holds the outputs of `flexunet train`"):
        check_output_dir(out, "infer", overwrite=True)
    with pytest.raises(FlexUNetError, match="written by `flexunet train`"):
        check_output_dir(out, "evaluate", writes=("history.json",), shares_with=("train",), overwrite=True)


def test_a_users_file_of_an_output_name_is_refused_with_and_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.png", "b.png", "notes.txt"):
        (out / name).write_text(name)
    (out / "figures").mkdir()
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match=r"already holds 3 entries of the names `flexunet infer` writes, "
                                                r"not written by it \(a.png, b.png, figures\); it never replaces "
                                                r"a file it did not write, with or without --overwrite"):
            check_output_dir(out, "infer", overwrite=overwrite, writes=("a.png", "b.png", "c.png"),
                             replaces=("figures",))
    with pytest.raises(FlexUNetError, match=r"holds 4 entries `flexunet infer` did not write .*pass --overwrite "
                                            r"to write beside them \(none of them is replaced or deleted\)"):
        check_output_dir(out, "infer", writes=("c.png",))
    check_output_dir(out, "infer", overwrite=True, writes=("c.png",))  # beside them: allowed
    claim_output_dir(out, "infer", ["a.png"])                          # once recorded, a.png is infer's own
    check_output_dir(out, "infer", overwrite=True, writes=("a.png", "c.png"))


def test_an_output_inside_another_commands_output_is_refused(tmp_path):
    dataset = tmp_path / "dataset"
    claim_output_dir(dataset, "split", ["train", "mini_test", "split.json"])
    (dataset / "mini_test" / "masks").mkdir(parents=True)
    with pytest.raises(FlexUNetError, match=r"lies inside .*mini_test, written by `flexunet split`"):
        check_output_dir(dataset / "mini_test" / "masks", "infer", overwrite=True)
    with pytest.raises(FlexUNetError, match=r"= .*mini_test: is .*mini_test, written by `flexunet split`"):
        check_output_dir(dataset / "mini_test", "infer", overwrite=True)
    with pytest.raises(FlexUNetError, match="lies inside .*train, written by `flexunet split`"):
        check_output_file(dataset / "train" / "images" / "c.config", "plan", True, "--out")
    check_output_dir(dataset, "stats", overwrite=True, writes=("stats.json",), shares_with=("split",))


def test_sharing_a_folder_never_opens_the_inside_of_the_others_entries(tmp_path):
    """stats writes beside split's subsets, never inside them: --out mini_test/masks was written into
    with --overwrite (and the refusal without it said to pass --overwrite)."""
    dataset = tmp_path / "dataset"
    claim_output_dir(dataset, "split", ["train", "mini_test", "split.json"])
    (dataset / "mini_test" / "masks").mkdir(parents=True)
    (dataset / "mini_test" / "masks" / "1.png").write_bytes(b"mask")
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match=r"lies inside .*mini_test, written by `flexunet split`; `flexunet "
                                                r"stats` never writes into another command's output"):
            check_output_dir(dataset / "mini_test" / "masks", "stats", overwrite=overwrite, writes=("stats.json",),
                             shares_with=("split",))
    check_output_dir(dataset, "stats", writes=("stats.json",), shares_with=("split",))   # beside them: fine


def test_nothing_but_train_and_export_writes_anywhere_in_a_run_folder(tmp_path):
    """A new name in another run's model_dir (plan --out models/c.config, synth models, stats
    --out models/charts) was written: only names inside recorded entries were refused."""
    models, curves = tmp_path / "models", tmp_path / "eval"
    claim_output_dir(models, "train", ["best_model.keras", "last_checkpoint", "logs"])
    claim_output_dir(curves, "train", ["history.json"])
    assert is_run_folder(models) and not is_run_folder(curves) and not is_run_folder(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match=r"--out = .*models.c.config: lies inside .*models, the folder of a "
                                                r"`flexunet train` run; `flexunet plan` never writes into a run"):
            check_output_file(models / "c.config", "plan", overwrite, "--out")
        with pytest.raises(FlexUNetError, match="lies inside .*models, the folder of a `flexunet train` run"):
            check_output_dir(models / "charts", "stats", overwrite=overwrite)
        with pytest.raises(FlexUNetError, match="lies inside .*models, the folder of a `flexunet train` run"):
            check_whole_dir(models / "deep" / "master", "prepare", overwrite, "[prepare] output_dir")
    check_output_file(models / "export" / "model.keras", "export", False, "--out")  # export checks export/ itself
    check_output_dir(models / "epochs", "train")                                    # a run's own folders
    check_output_file(curves / "c.config", "plan", False, "--out")                  # eval_dir is no run folder


def test_a_single_file_is_replaced_only_when_its_own(tmp_path):
    path = tmp_path / "evaluation.csv"
    check_output_file(path, "evaluate", False, "[eval] evaluation_csv")  # new: fine
    path.write_text("user's")
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match="exists and was not written by `flexunet evaluate`; it never "
                                                "replaces a file it did not write, with or without --overwrite"):
            check_output_file(path, "evaluate", overwrite, "[eval] evaluation_csv")
    claim_output_file(path, "plan")
    with pytest.raises(FlexUNetError, match="written by `flexunet plan`; `flexunet evaluate` never replaces"):
        check_output_file(path, "evaluate", True, "[eval] evaluation_csv")
    assert owner_of(path) == "plan" and owner_of(tmp_path / "absent.csv") is None
    other = tmp_path / "c.config"
    other.write_text("x")
    claim_output_file(other, "plan")
    with pytest.raises(FlexUNetError, match="written by an earlier `flexunet plan`; pass --overwrite"):
        check_output_file(other, "plan", False, "--out")
    check_output_file(other, "plan", True, "--out")
    check_output_file(other, "plan", False, "--out", own_needs_overwrite=False)  # evaluate's csv: re-run freely
    with pytest.raises(FlexUNetError, match="is a folder; expected a file path"):
        check_output_file(tmp_path, "plan", True, "--out")


def test_a_folder_built_whole_replaces_only_its_own_earlier_output(tmp_path):
    target = tmp_path / "master"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target, "prepare", False, "[prepare] output_dir") as tmp:
            (tmp / "half.png").write_text("x")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_output_dir(target, "prepare", False, "[prepare] output_dir") as tmp:
        (tmp / "whole.png").write_text("x")
    assert sorted(p.name for p in target.iterdir()) == [OWNER_FILE, "whole.png"]
    assert folder_owners(target) == {"prepare": ["whole.png"]}
    with pytest.raises(FlexUNetError, match=r"holds the output of an earlier `flexunet prepare`; pass --overwrite"):
        with atomic_output_dir(target, "prepare", False, "[prepare] output_dir"):
            pass
    with atomic_output_dir(target, "prepare", True, "[prepare] output_dir") as tmp:
        (tmp / "again.png").write_text("y")
    assert folder_owners(target) == {"prepare": ["again.png"]}
    (target / "notes.txt").write_text("mine")
    (target / ".git").mkdir()                         # hidden entries of the user's count too
    before = snapshot(target)
    with pytest.raises(FlexUNetError, match=r"holds 2 entries `flexunet prepare` did not write \(.git, notes.txt\); "
                                            r"it builds this folder whole and would delete them"):
        with atomic_output_dir(target, "prepare", True, "[prepare] output_dir"):
            pass
    assert snapshot(target) == before
    with pytest.raises(FlexUNetError, match="holds 3 entries `flexunet split` did not write"):
        check_whole_dir(target, "split", True, "[split] output_dir/name")
