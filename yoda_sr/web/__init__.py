"""`yoda-sr web`: a local page to upscale, compare and inspect, and an API endpoint, built with Gradio.

``models`` lists what the page offers and keeps one loaded upscaler; ``jobs`` runs uploads through
the same code as `yoda-sr upscale` (``upscaling.UpscaleJobs``) and ``views`` renders what the page
shows; ``app`` lays out the Gradio page and its events; ``server`` starts it offline and private.
Only ``app`` and ``server`` import Gradio (an optional extra: ``pip install yoda-sr[web]``).
"""
