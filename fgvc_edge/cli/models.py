"""`fgvc-edge models`: the registry as a table."""
from rich.table import Table

from fgvc_edge.cli._common import console


def models_cmd() -> None:
    """List the registered models with their default input size, classes and variants."""
    from fgvc_edge.models import get_model_config, list_models

    table = Table(title="fgvc-edge models")
    for column in ("model", "input", "classes", "variants", "paper"):
        table.add_column(column)
    for name in list_models():
        cfg = get_model_config(name)
        table.add_row(name, str(cfg.input_size), str(cfg.num_classes), ", ".join(cfg.variants) or "-", cfg.paper)
    console.print(table)
