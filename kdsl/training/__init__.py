"""Training runs: ``kdsl.train`` (api), settings -> config (config), data (data), processes and
devices (distributed), random state (rng), evaluation (evaluate), the loop (loop), the run
directory and checkpoint format (rundir, curves), progress events and the result (report)."""
