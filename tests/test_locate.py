"""Where code is, and whether it is the user's: `tracer.model.location`."""

from __future__ import annotations

import inspect
import json
import os
import sysconfig
from pathlib import Path

import pytest

import tracer.exercises
import tracer.exercises.lecture
import tracer.model.location
from tracer.model.location import Locator, is_user_file

STDLIB = sysconfig.get_paths()["stdlib"]


@pytest.mark.parametrize(
    "filename",
    [
        __file__,  # a test, like any script of the user's
        "/home/me/project/train.py",
        "<cell 3>",  # a cell of `trace notebook`
        "<ipython-input-4-9f8e7d6c5b4a>",  # a cell in IPython
        "/tmp/ipykernel_1234/2411623398.py",  # a cell in a Jupyter kernel
        "<stdin>",
        "<string>",  # python -c
        inspect.getfile(tracer.exercises.lecture),  # exercises are written like user code
    ],
)
def test_the_users_code(filename: str) -> None:
    assert is_user_file(filename)


@pytest.mark.parametrize(
    "filename",
    [
        json.__file__,  # the standard library
        os.path.join(STDLIB, "contextlib.py"),
        pytest.__file__,  # site-packages
        "<frozen importlib._bootstrap>",
        "<frozen runpy>",
        tracer.model.location.__file__,  # tracer itself
        inspect.getfile(tracer.exercises),  # the exercise registry is tracer's, not an exercise
    ],
)
def test_not_the_users_code(filename: str) -> None:
    assert not is_user_file(filename)


def test_torch_is_not_the_users() -> None:
    torch = pytest.importorskip("torch")
    assert not is_user_file(torch.__file__)


def test_locations_read_as_the_user_knows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    locate = Locator(tmp_path / "train.py", shown="train.py")
    main = locate(str(tmp_path / "train.py"), 12)
    assert (str(main), main.spoken(), main.slug()) == ("train.py:12", "train.py:12", "line12")
    helper = locate(str(tmp_path / "lib" / "my-helper.py"), 7)
    assert (str(helper), helper.slug()) == (
        os.path.join("lib", "my-helper.py") + ":7",
        "my_helper-line7",
    )
    cell = locate("<cell 3>", 5)
    assert (cell.spoken(), cell.slug()) == ("cell 3, line 5", "cell3-line5")
    kept = Locator("<ipython-input-2-ab12>", shown="In [2]")("<ipython-input-2-ab12>", 4)
    assert str(kept) == "In [2]:4"
