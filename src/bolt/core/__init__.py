"""What every stage shares: the record formats, chunking, special tokens and training layouts,
the token store, model loading, run directories, executors, the job graph and progress."""
