"""The README's commands as a new user copies them: every `python -m ssl_fast` line is one the
parser accepts, every `make` target exists, the options table names every `train` option and
no other; and (slow, `make test-slow`, in CI) the train, eval and info commands run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_fast.cli import BENCH_OPS, build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _commands() -> list[list[str]]:
    """Every command line that runs ssl_fast, from the sh blocks and the inline code, once
    each, split into words, without its comment and the brackets around optional parts."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]*-m ssl_fast \w[^`\n]*)`", README)  # with a command, not the prefix alone
    commands = dict.fromkeys(line.split("#")[0].replace("[", "").replace("]", "").strip()
                             for line in lines if "-m ssl_fast" in line)
    return [shlex.split(command) for command in commands]


COMMANDS = _commands()


def _cli_args(command: list[str]) -> list[str]:
    """The words after `-m ssl_fast`."""
    return command[command.index("ssl_fast") + 1:]


def _options_table() -> set[str]:
    """The options named in the table of `train` options."""
    rows = re.search(r"^\| option \| \|\n(.*?)\n\n", README, re.S | re.M)
    assert rows, "the README has no options table"
    return set(re.findall(r"--[a-z][a-z-]*", rows[1]))


def test_the_readme_shows_commands():
    assert len(COMMANDS) >= 8
    assert any(_cli_args(c)[:1] == ["train"] for c in COMMANDS)
    assert any(_cli_args(c)[:1] == ["eval"] for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=shlex.join)
def test_every_readme_command_parses(command):
    args = build_parser().parse_args(_cli_args(command))  # a usage error exits
    if args.command == "bench":
        assert set(args.ops) <= {*BENCH_OPS, "all"}, args.ops


def test_every_make_target_exists():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    named = set(re.findall(r"(?:^|`)make ([a-z][\w-]*)", README, re.M))  # in code, not prose
    assert named and named <= targets, named - targets


def test_the_options_table_names_every_train_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", capsys.readouterr().out)) - {"--help"}
    assert _options_table() == options


@pytest.mark.slow
def test_the_readme_commands_run(tmp_path):
    """The train, eval and info commands as shown, with 2 steps and tmp_path for runs/, in the
    order shown (eval reads what train wrote); bench commands only parse (minutes each)."""
    env = {k: v for k, v in os.environ.items() if k != "SSL_FAST_BACKEND"}
    for command in COMMANDS:
        args = _cli_args(command)
        if args[0] == "bench":
            continue
        if args[0] == "train":
            args += ["--steps", "2", "--out", str(tmp_path), "--quiet"]
        runs = [re.sub(r"^runs/", f"{tmp_path}/", word) for word in args]  # eval's run folder
        argv = command[:command.index("ssl_fast") + 1] + runs
        if argv[0] == "python":
            argv[0] = sys.executable
        elif argv[0] == "torchrun":
            argv[0] = str(Path(sys.executable).with_name("torchrun"))
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{shlex.join(command)}: {proc.stderr[-2000:]}"
