"""``torchrun --nproc_per_node N -m fgvc_edge.train MODEL --data DIR ...``: the train command, one per process.

The options are those of ``fgvc-edge train``; torchrun's RANK / WORLD_SIZE make the trainer join the process
group (DistributedDataParallel), and only rank 0 writes the run folder and draws progress.
"""
import typer

from fgvc_edge.cli._common import command
from fgvc_edge.cli.train import train_cmd


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command(train_cmd))
    app()


if __name__ == "__main__":
    main()
