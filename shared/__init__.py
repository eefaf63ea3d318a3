"""Code shared by the projects: config, distribution, runs, callbacks, saving, plots."""
