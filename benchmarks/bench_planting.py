"""Thin entry point kept for old commands: the benchmark lives in the book's apparatus (python -m planting_core.bench)."""
from planting_core.book.bench import main

if __name__ == "__main__":
    main()
