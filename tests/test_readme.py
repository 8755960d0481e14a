"""README.md's Python blocks run as written, shrunk to one epoch."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A block's `epochs = N` (or `epochs, batch_size = N, B`) line: N becomes 1.
EPOCHS_LINE = re.compile(r"^(epochs\b[\w, ]*=\s*)(\d+)", re.MULTILINE)


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_readme_python_blocks_run(tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = python_blocks(f.read())
    assert blocks, "README.md has no ```python block"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    for i, block in enumerate(blocks):
        if ".fit(" in block:
            block, count = EPOCHS_LINE.subn(r"\g<1>1", block)
            assert count == 1, f"block {i} trains but has no single `epochs = N` line to shrink"
        result = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"README block {i} failed:\n{result.stderr[-3000:]}"
        # Python warnings (Keras' `shuffle=True` one among them); TensorFlow's own log is not ours.
        assert not re.findall(r"\w+Warning: .*", result.stderr), f"README block {i} warns:\n{result.stderr[-3000:]}"
        if ".fit(" in block:
            metrics = eval(result.stdout.strip().splitlines()[-1], {"np": __import__("numpy")})
            assert 0.1 < metrics["accuracy"] <= 1 and metrics["loss"] < 2.3, metrics  # above chance
