"""Progress of long commands: counts and time left on a terminal, plain lines in logs."""
import io

from rich.console import Console

from fgvc_edge.cli._progress import progress_display


def _console(terminal):
    return Console(file=io.StringIO(), force_terminal=terminal, width=120)


def test_logs_get_one_line_per_step_with_count_and_time_left():
    console = _console(False)
    with progress_display(console) as display:
        rows = display.task("bench")
        rows.set_total(4)
        for i in range(4):
            rows.describe("row {}".format(i))
            rows.advance()
    lines = console.file.getvalue().splitlines()
    assert [line.split(" · ")[1] for line in lines] == ["0/4", "1/4", "2/4", "3/4"]
    assert [line.split(" · ")[-1] for line in lines] == ["row 0", "row 1", "row 2", "row 3"]
    assert "left" not in lines[0] and all("left" in line for line in lines[1:])
    assert all(" elapsed" in line for line in lines)


def test_counted_work_prints_a_line_per_tenth():
    console = _console(False)
    with progress_display(console) as display:
        images = display.task("calibrating", 512, per_step=False)
        for _ in range(512):
            images.advance()
    lines = console.file.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("calibrating · 512/512")


def test_steps_without_a_count_still_print():
    console = _console(False)
    with progress_display(console) as display:
        steps = display.task("build")
        steps.describe("exporting resnet18 to FP32 ONNX")
    (line,) = console.file.getvalue().splitlines()
    assert line.startswith("build · 0:00:00 elapsed · exporting")


def test_a_terminal_gets_a_bar_with_n_of_m():
    console = _console(True)
    with progress_display(console) as display:
        rows = display.task("bench", 5)
        rows.describe("onnxruntime int8 resnet18 @64 b1")
        rows.advance(2)
    out = console.file.getvalue()
    assert "2/5" in out and "bench: onnxruntime int8 resnet18 @64 b1" in out and "left" in out
