# Similarity tasks and votes (issue 6).
