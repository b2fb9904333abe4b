"""SLUG job options and output names (the CLI's `run`)."""
from pathlib import Path

import pytest

from unlearnkit.cli.unlearn_job import JobOptions, check_outputs, output_paths


def test_output_paths_with_or_without_suffix():
    for out in ("d/seven", "d/seven.safetensors"):
        paths = output_paths(out)
        assert paths == {"patch": Path("d/seven.safetensors"), "plot": Path("d/seven.layers.png"),
                         "summary": Path("d/seven.json")}


def test_existing_output_refused_unless_overwrite(tmp_path):
    paths = output_paths(str(tmp_path / "a"))
    paths["plot"].write_bytes(b"x")
    with pytest.raises(FileExistsError, match="a.layers.png"):
        check_outputs(paths, overwrite=False)
    check_outputs(paths, overwrite=True)


@pytest.mark.parametrize("kwargs,message", [
    ({"clip_dir": "c", "forget": "7"}, "need the tiny world's CLIP"),
    ({"clip_dir": "c", "forget_images": "f", "concept": "x"}, "give retain images"),
    ({"forget": "7", "dtype": "int8"}, "dtype"), ({}, "exactly one"),
    ({"forget": "7", "search": "generation", "tower": "both"}, "needs a tiny-world concept"),
    ({"forget_images": "f", "concept": "x", "search": "generation"}, "needs a tiny-world concept"),
    ({"forget": "7", "search": "judges"}, "search: expected"),
])
def test_option_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JobOptions(out="o", **kwargs).check()
