// wire tests (in progress)
