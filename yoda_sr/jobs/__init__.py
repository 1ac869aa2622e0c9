"""Jobs over files: finding images, planning outputs and names, claims and the batch loop, the run
log, upscale's and attention's per-file work."""
