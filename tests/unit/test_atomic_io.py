"""elf_eqx.io.atomic: files and folders appear complete or not at all, nothing existing is
replaced without the overwrite flag, and a failed write leaves nothing behind."""

from __future__ import annotations

import json

import pytest

from elf_eqx.io.atomic import refuse_existing, staged_file, staged_folder, write_json_atomic, write_text_atomic


def test_write_replaces_whole_files_and_leaves_no_partial(tmp_path):
    target = tmp_path / "deep" / "a.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two ü")
    write_json_atomic(tmp_path / "deep" / "b.json", {"x": [1, 2]})
    assert target.read_text(encoding="utf-8") == "two ü"
    assert json.loads((tmp_path / "deep" / "b.json").read_text()) == {"x": [1, 2]}
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt", "b.json"]


def test_a_failed_staged_file_keeps_the_old_one(tmp_path):
    target = tmp_path / "plot.png"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with staged_file(target) as partial:
            assert partial.parent == tmp_path and partial.name.startswith(".plot.partial-") and partial.suffix == ".png"
            partial.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_the_overwrite_guard_names_the_path_and_the_flag(tmp_path):
    target = tmp_path / "out.json"
    assert refuse_existing(target) == target
    target.write_text("{}")
    with pytest.raises(FileExistsError, match=r"out.json exists; pass --overwrite to replace it, or another --output$"):
        refuse_existing(target, other="--output")
    with pytest.raises(FileExistsError, match="out.json exists and is never overwritten"):
        refuse_existing(target, flag=None)
    assert refuse_existing(target, overwrite=True) == target


def test_a_cache_folder_written_meanwhile_by_another_process_wins(tmp_path):
    entry = tmp_path / "cache" / "tokens-abc"
    with staged_folder(entry, keep_existing=True) as staging:
        (staging / "mine").write_text("1")
        entry.mkdir(parents=True)  # another process finished the same entry first
        (entry / "theirs").write_text("1")
    assert [p.name for p in entry.iterdir()] == ["theirs"] and [p.name for p in entry.parent.iterdir()] == ["tokens-abc"]


def test_a_folder_appearing_during_a_run_is_not_replaced(tmp_path):
    out = tmp_path / "judge"
    with pytest.raises(FileExistsError, match="appeared during this run; the finished result is kept at"):
        with staged_folder(out) as staging:
            (staging / "a").write_text("1")
            out.mkdir()
    assert [p.name for p in out.iterdir()] == [] and (staging / "a").read_text() == "1"
