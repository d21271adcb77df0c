"""``python -m fgvc_edge.cli`` — the same as ``fgvc-edge``; torchrun launches training through it::

    torchrun --nproc_per_node N -m fgvc_edge.cli train MODEL --data DIR ...

torchrun's RANK / WORLD_SIZE make the trainer (``fgvc_edge.train.train``, the library entry point the
command calls) join the process group; only rank 0 writes the run folder and draws progress.
"""
from fgvc_edge.cli import main

if __name__ == "__main__":
    main()
