"""Service settings: both forms of API keys, and a bad setting as one line rather than a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recindex.cli import app
from recindex.errors import RecIndexError
from recindex.serve.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("given", "keys"),
    [
        ("secret", ["secret"]),
        ("k1,k2", ["k1", "k2"]),
        (" k1 , k2 ,", ["k1", "k2"]),
        ('["k1", "k2"]', ["k1", "k2"]),
        ('["a,b"]', ["a,b"]),  # the JSON form keeps commas inside keys
        ("", []),
    ],
)
def test_api_keys_from_the_environment_comma_separated_or_a_json_list(monkeypatch, given, keys):
    monkeypatch.setenv("RECINDEX_API_KEYS", given)
    assert load_settings().api_keys == keys


def test_api_keys_from_a_settings_file_in_either_form(monkeypatch, tmp_path):
    monkeypatch.delenv("RECINDEX_API_KEYS", raising=False)
    listed, joined = tmp_path / "listed.toml", tmp_path / "joined.toml"
    listed.write_text('api_keys = ["k1", "k2"]\n')
    joined.write_text('api_keys = "k1,k2"\n')
    assert load_settings(listed).api_keys == load_settings(joined).api_keys == ["k1", "k2"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RECINDEX_API_KEYS", '["k1",', "comma-separated keys (k1,k2) or a JSON list"),
        ("RECINDEX_API_KEYS", '[""]', "comma-separated keys (k1,k2) or a JSON list"),  # an empty key
        ("RECINDEX_MAX_K", "lots", "a whole number from 1 to 16384"),
        ("RECINDEX_OPEN_READS", "maybe", "true or false"),
        ("RECINDEX_RECALL_SAMPLE_RATE", "2", "a number from 0 to 1"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_its_form(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(RecIndexError) as refused:
        load_settings()
    message = str(refused.value)
    assert "\n" not in message and variable in message and expected in message, message


def test_a_bad_api_key_value_is_never_echoed(monkeypatch):
    monkeypatch.setenv("RECINDEX_API_KEYS", '["top-secret-key", 7]')
    with pytest.raises(RecIndexError) as refused:
        load_settings()
    assert "top-secret-key" not in str(refused.value)


def test_an_unknown_setting_in_the_file_is_named(tmp_path):
    path = tmp_path / "service.toml"
    path.write_text("api_key = 'k'\n")
    with pytest.raises(RecIndexError, match=r"unknown service setting 'api_key' in .*service.toml"):
        load_settings(path)


def test_serve_reports_a_bad_setting_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RECINDEX_MAX_K": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "recindex.cli", "serve", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "RECINDEX_MAX_K" in done.stderr and "a whole number" in done.stderr


def test_serve_help_shows_both_forms_of_api_keys():
    shown = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "RECINDEX_API_KEYS=k1,k2" in shown and """RECINDEX_API_KEYS='["k1","k2"]'""" in shown, shown
