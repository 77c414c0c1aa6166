"""``python -m nfkit.apps COMMAND ...``: the ``nfkit`` command, as a module (``torchrun ... -m nfkit.apps fit ...``)."""
import sys

from nfkit.apps.cli import main

sys.exit(main())
