"""Every id and name check matches the whole string."""

from __future__ import annotations

import pytest

from bundle_tool.home import Home
from sesemi.errors import FormatError
from sesemi.identity import Identity, is_principal_id
from sesemi.names import check_model_id
from sesemi.openwhisk import check_action_name, check_namespace


@pytest.mark.parametrize("check", [check_model_id, check_action_name, check_namespace])
def test_trailing_newline_is_refused(check):
    check("digits")
    with pytest.raises(FormatError):
        check("digits\n")


def test_principal_id_and_identity_name_refuse_trailing_newline(tmp_path):
    pid = Identity.generate("x").principal_id
    assert is_principal_id(pid) and not is_principal_id(pid + "\n")
    with pytest.raises(FormatError):
        Home(tmp_path).new_identity("alice\n")
