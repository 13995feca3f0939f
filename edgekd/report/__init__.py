"""Reports over a run's artifact directories: the results store, the HTML report, run diffs."""
