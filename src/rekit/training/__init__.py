"""Training stage: one split (loop.py), K folds and OOF (cv.py)."""
