"""The ``mbeon-chat`` command line, run as a subprocess: check-config, migrate and user management."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MBEON_CHAT = str(Path(sys.executable).parent / "mbeon-chat")


def write_config(tmp: Path, extra: str = "") -> Path:
    config = tmp / "mbeon-chat.toml"
    config.write_text(
        f"""
[server]
domain = "localhost"
data_dir = "{tmp / "var"}"

[log]
level = "warning"

[listeners]
starttls = ["127.0.0.1:0"]
direct_tls = ["127.0.0.1:0"]
http = ["127.0.0.1:0"]
{extra}
"""
    )
    return config


def run(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBEON_")}
    return subprocess.run(
        [MBEON_CHAT, "-c", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


# --- check-config ------------------------------------------------------------------------------------
def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    result = run(write_config(tmp_path), "check-config")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_the_shipped_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    from mbeon_chat.cli import main

    shipped = Path(__file__).resolve().parents[2] / "config" / "mbeon-chat.toml"
    assert main(["-c", str(shipped), "check-config"]) == 0, capsys.readouterr().err


BAD_KEYS = [
    ("[limits]\nmax_stanza_sise = 1000", "limits.max_stanza_sise: unknown key"),
    ("[limits]\nmax_depth = 'deep'", "limits.max_depth: must be an integer"),
    ("[auth]\nresource_conflict = 'fight'", "auth.resource_conflict"),
    ("[nonsense]\nx = 1", "nonsense: unknown key"),
    ("[plugins.version]\nshow_oss = true", "plugins.version.show_oss: unknown key"),
    ("[plugins.register]\nmin_password_length = 0", "plugins.register.min_password_length"),
    ("[listeners]\nhttp_tls = 'yes'", "listeners.http_tls: must be true or false"),
]
BAD_KEY_IDS = [
    "unknown-key",
    "wrong-type",
    "bad-value",
    "unknown-section",
    "plugin-key",
    "plugin-value",
    "bool",
]


def bad_config(tmp: Path, extra: str) -> Path:
    config = write_config(tmp)
    if extra.startswith("[listeners]"):
        config.write_text(config.read_text().replace("[listeners]", extra))  # one [listeners] table
    else:
        config.write_text(config.read_text() + "\n" + extra + "\n")
    return config


@pytest.mark.parametrize(("extra", "message"), [BAD_KEYS[0], BAD_KEYS[4]], ids=["unknown-key", "plugin-key"])
def test_check_config_names_the_bad_key_path(tmp_path: Path, extra: str, message: str) -> None:
    result = run(bad_config(tmp_path, extra), "check-config")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("extra", "message"), BAD_KEYS, ids=BAD_KEY_IDS)
def test_every_kind_of_bad_key_is_named(
    tmp_path: Path, extra: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mbeon_chat.cli import main

    assert main(["-c", str(bad_config(tmp_path, extra)), "check-config"]) != 0  # in-process: quicker
    assert message in capsys.readouterr().err


def test_check_config_reports_a_toml_syntax_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[limits\nmax_depth = 3")
    result = run(config, "check-config")
    assert result.returncode != 0
    assert str(config) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_is_reported(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.toml", "check-config")
    assert result.returncode != 0
    assert "no such file" in result.stderr


# --- migrate and users -------------------------------------------------------------------------------
def test_user_management_messages(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    migrated = run(config, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "schema is up to date" in migrated.stdout

    added = run(config, "user", "add", "dave", "--password-stdin", stdin="dave-password-1\n")
    assert added.returncode == 0, added.stderr
    assert "created dave@localhost" in added.stdout

    again = run(config, "user", "add", "dave", "--password-stdin", stdin="another-password\n")
    assert again.returncode != 0
    assert "already exists" in again.stderr

    short = run(config, "user", "add", "erin", "--password-stdin", stdin="short\n")
    assert short.returncode != 0
    assert "too short" in short.stderr

    missing = run(config, "user", "passwd", "zoe", "--password-stdin", stdin="zoe-password-1\n")
    assert missing.returncode != 0
    assert "no user zoe" in missing.stderr

    listed = run(config, "user", "list")
    assert listed.returncode == 0
    assert listed.stdout.split() == ["dave@localhost"]
    for result in (again, short, missing):
        assert "Traceback" not in result.stderr


def test_user_passwd_and_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rest of the user commands, in-process (the subprocess test above covers the real entry point)."""
    import io

    from mbeon_chat.cli import main

    config = str(write_config(tmp_path))

    def cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(["-c", config, *args])
        out, err = capsys.readouterr()
        return code, out, err

    assert cli("migrate")[0] == 0
    assert cli("user", "add", "dave", "--password-stdin", stdin="dave-password-1\n")[0] == 0
    assert cli("user", "passwd", "dave@localhost", "--password-stdin", stdin="dave-password-2\n") == (
        0,
        "password changed for dave@localhost\n",
        "",
    )
    code, _, err = cli("user", "passwd", "dave", "--password-stdin", stdin="tiny\n")
    assert code != 0 and "too short" in err
    code, _, err = cli("user", "add", "no body", "--password-stdin", stdin="long-enough-1\n")
    assert code != 0 and "invalid user name" in err
    code, _, err = cli("user", "add", "dave@elsewhere.example", "--password-stdin", stdin="long-enough-1\n")
    assert code != 0 and "invalid user name" in err
    code, out, _ = cli("user", "remove", "dave")
    assert code == 0 and "removed dave@localhost" in out
    code, _, err = cli("user", "remove", "dave")
    assert code != 0 and "no user dave@localhost" in err
    assert cli("user", "list")[1] == ""


def test_user_commands_before_migrate_say_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mbeon_chat.cli import main

    assert main(["-c", str(write_config(tmp_path)), "user", "list"]) != 0
    assert "mbeon-chat migrate" in capsys.readouterr().err
