"""The fuzz modules' shared fixture: a copy of the session's tiny U-Net bundle to mutate."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="module")
def work(tmp_path_factory, unet_bundle):
    root = tmp_path_factory.mktemp("fuzz")
    base = root / "base"
    shutil.copytree(unet_bundle, base)
    return root, base


