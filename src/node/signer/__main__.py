"""``python -m node.signer``: the same operator commands as ``tvote signer`` (see admin.py)."""

import sys

from node.signer.admin import main

sys.exit(main())
