"""`python -m planting_core`: the main job (see planting_core.run)."""
import sys

from .run import main

sys.exit(main())
