"""``python -m trainer.export``: the command lives in ``trainer/commands/export.py``.

The library package and the command share the name users type; this entry point only hands over.
"""

import sys

from trainer.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
