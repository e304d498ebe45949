"""Functional building blocks with no state and no dependencies inside the package: curves and colour."""
