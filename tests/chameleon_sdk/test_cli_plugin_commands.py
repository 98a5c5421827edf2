"""Plugins add subcommands to ``chameleon`` through the ``register_commands`` hook."""

from __future__ import annotations

import pytest

import chameleon_sdk as cs
from chameleon_sdk import cli, plugin_api


class Hello:
    @plugin_api.hookimpl
    def register_commands(self, subcommands):
        p = subcommands.add_parser("hello", help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(func=self.run)

    def run(self, args):
        if args.name == "nobody":
            raise cs.ConfigError("--name nobody: there is nobody to greet")
        print(f"hello {args.name}")
        return 0


class TakesAName:
    @plugin_api.hookimpl
    def register_commands(self, subcommands):
        subcommands.add_parser("plugins")


class Broken:
    @plugin_api.hookimpl
    def register_commands(self, subcommands):
        raise RuntimeError("boom")


@pytest.fixture
def registry():
    with cs.use_registry() as registry:
        yield registry


def test_a_plugin_command_runs_like_a_built_in_one(registry, capsys):
    cs.register_plugin(Hello(), name="hello-plugin")
    assert cli.main(["hello", "--name", "there"]) == 0
    assert capsys.readouterr().out == "hello there\n"
    assert cli.main(["hello", "--name", "nobody"]) == 2  # a user's mistake: one error line, no traceback
    err = capsys.readouterr().err
    assert err == "error: --name nobody: there is nobody to greet\n"


def test_a_taken_name_is_refused_naming_the_plugin(registry, capsys):
    cs.register_plugin(TakesAName(), name="greedy-plugin")
    assert cli.main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "plugin 'greedy-plugin' adds a command whose name is taken" in err and "Traceback" not in err


def test_a_broken_plugin_is_left_out_with_a_warning(registry, capsys):
    cs.register_plugin(Broken(), name="broken-plugin")
    cs.register_plugin(Hello(), name="hello-plugin")
    with pytest.warns(UserWarning, match="plugin 'broken-plugin' could not add its commands: RuntimeError"):
        assert cli.main(["hello"]) == 0
    assert capsys.readouterr().out == "hello world\n"
