"""The embedded arithmetic world (corpus, oracle teacher, judge) and ``bolt demo`` built on it."""
