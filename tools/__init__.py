"""Repository tools (run from a clone): the notebooks' batch runner and the book builder."""
