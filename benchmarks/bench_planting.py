"""Thin entry point kept for old commands: the benchmark lives in the library (python -m planting_core.bench)."""
from planting_core.bench import main

if __name__ == "__main__":
    main()
