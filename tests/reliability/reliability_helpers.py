"""Child processes for the reliability tests: a fresh interpreter running this checkout, killed mid-write."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Prepended to a child's script: SIGKILL this process when `os.replace` is about to rename onto KILL_AT
# (an absolute path), i.e. at a chosen point between the renames of a multi-file write.
KILL_HOOK = textwrap.dedent(
    """
    import os, signal
    _kill_at, _replace = os.path.abspath(os.environ["KILL_AT"]), os.replace
    def _replace_or_die(src, dst, *args, **kwargs):
        if os.path.abspath(dst) == _kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)
    os.replace = _replace_or_die
    """
)


def run_child(script: str, *, kill_at=None, env=None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter with this checkout first on the path; with ``kill_at``, the
    child SIGKILLs itself when it is about to rename a file onto that path (:data:`KILL_HOOK`)."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    full_env.update(env or {})
    code = textwrap.dedent(script)
    if kill_at is not None:
        full_env["KILL_AT"] = str(kill_at)
        code = KILL_HOOK + code
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True,
                          timeout=timeout)
