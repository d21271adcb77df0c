"""Upper bounds on sizes a user or a record can ask for, checked before any work starts.

Beyond these, a request is far outside what fine-grained classifiers use (papers train at 224–600 px) and
would exhaust memory minutes into a run instead of failing at once; the CLI shows them as option ranges.
Valid on Python 3.8.
"""

MAX_INPUT_SIZE = 2048  # square input side, px
MAX_BATCH = 1024
MAX_CLASSES = 100000
MAX_SEED = 2**31 - 1
MAX_BENCH_ITERS = 100000
MAX_BENCH_WARMUP = 10000
