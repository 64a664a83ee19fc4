"""`python -m planting_core.bench`: the benchmark's command at its old address (it lives in planting_core.book.bench)."""
if __name__ == "__main__":
    from planting_core.book.bench import main
    main()
