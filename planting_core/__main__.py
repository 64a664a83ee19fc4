"""`python -m planting_core`: the main job (see planting_core.book.run)."""
import sys

from .book.run import main

sys.exit(main())
