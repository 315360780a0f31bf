"""``python -m omnicache_cluster`` runs the command line."""

import sys

from omnicache_cluster.cli import main

sys.exit(main())
