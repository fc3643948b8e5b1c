"""`rocket reproduce`: the paper's five variants x seeds on one dataset and teacher, with the
stages it shares with the demo (collection, teacher cache, one training run)."""
