"""`fgvc-edge predict`: top-k classes of images with a deployed artifact (no torch needed)."""
import json
from pathlib import Path
from typing import List

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import console


def predict_cmd(
    images: Annotated[List[Path], typer.Argument(help="Image files, folders of images, or quoted globs ('birds/*.jpg').", show_default=False)],
    model: Annotated[Path, typer.Option("--model", "-m", help="An .onnx artifact (with its sidecar).")],
    topk: Annotated[int, typer.Option("--topk", min=1, help="How many classes per image.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Classify IMAGES with an exported model."""
    from fgvc_edge.runtime import load
    from fgvc_edge.runtime.images import expand_image_paths

    paths = expand_image_paths(images)
    with load(str(model)) as runner:
        results = runner.predict(paths, topk=topk)
    if as_json:
        payload = [
            {"image": path, "top": [{"index": p.index, "label": p.label, "prob": p.prob} for p in preds]}
            for path, preds in zip(paths, results)
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    for path, preds in zip(paths, results):
        console.print("[bold]{}[/bold]".format(path))
        for rank, p in enumerate(preds, 1):
            console.print("  {}. {:<30} {:6.2%}  (class {})".format(rank, p.label, p.prob, p.index), highlight=False)
