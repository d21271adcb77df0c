"""Class 11: the parser's refusals (ranges, missing or unknown options) are one line with exit code 2."""
import pytest
from typer.testing import CliRunner

from fgvc_edge.cli import app


@pytest.mark.parametrize("args,needles", [
    (["bench", "resnet18", "--iters", "0"], ["'--iters'", "valid: 1 to 100000"]),
    (["export", "resnet18", "--input-size", "100000"], ["'--input-size'", "valid: 16 to 2048"]),
    (["export", "resnet18", "--num-classes", "x"], ["'--num-classes'", "valid: 1 to 100000"]),
    (["train", "resnet18", "--data", ".", "--seed", str(10**30)], ["'--seed'", "valid: 0 to 2147483647"]),
    (["eval", "x", "--data", ".", "--batch-size", "0"], ["'--batch-size'", "valid: 1 to 1024"]),
    (["export"], ["Missing argument", "fgvc-edge export --help"]),
    (["export", "resnet18", "--no-such-option"], ["No such option: --no-such-option"]),
    (["no-such-command"], ["No such command"]),
])
def test_parser_errors_are_one_line(args, needles):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0]


def test_help_still_prints_help():
    result = CliRunner().invoke(app, ["export", "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and "--input-size" in result.output
    bare = CliRunner().invoke(app, [])
    assert "Usage" in bare.output and "export" in bare.output
