"""Run one page's python blocks, in order, in one namespace: ``python run_page.py < blocks.json``.

Started by test_code_blocks.py in a fresh interpreter whose working directory is the page's
temporary directory. The JSON on stdin is ``{"blocks": [{"where", "source", "env"}, ...]}``:
``source`` is the block's code preceded by blank lines (so tracebacks name the page's lines),
``env`` the variables set while that block runs (a ``needs:`` block's engine), restored after it.
The namespace is a fresh ``__main__`` module, as for a script; top-level ``await`` is allowed, on
one event loop shared by the page's blocks (as in ``python -m asyncio``). Prints ``RAN <n>
BLOCKS`` once every block ran, so that a block ending the interpreter early does not pass.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import sys
import types
from typing import Any

DONE = "RAN {} BLOCKS"


def _run(code: types.CodeType, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
    if code.co_flags & inspect.CO_COROUTINE:
        loop.run_until_complete(eval(code, namespace))
    else:
        exec(code, namespace)


def main() -> int:
    """Run the blocks read from stdin; the exit status."""
    spec = json.load(sys.stdin)
    sys.path[0] = os.getcwd()  # as `python page.py` run there: modules a block writes are importable
    module = types.ModuleType("__main__")
    module.__file__ = os.path.join(os.getcwd(), "__main__.py")
    sys.modules["__main__"] = module
    loop = asyncio.new_event_loop()
    try:
        for block in spec["blocks"]:
            print(f"--- running {block['where']}", file=sys.stderr, flush=True)
            code = compile(
                block["source"], block["filename"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
            saved = {name: os.environ.get(name) for name in block["env"]}
            os.environ.update(block["env"])
            try:
                _run(code, module.__dict__, loop)
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    print(DONE.format(len(spec["blocks"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
