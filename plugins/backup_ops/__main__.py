"""Entry point for ``python -m backup_ops``."""

import sys

from backup_ops.cli import main

sys.exit(main())
